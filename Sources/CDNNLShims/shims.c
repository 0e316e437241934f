#include "CDNNLShims.h"
#include <oneapi/dnnl/dnnl.h>
#include <stdlib.h>
#include <string.h>

void omp_set_num_threads(int);  // libgomp, which libdnnl links

struct esft_matmul {
    dnnl_primitive_t prim;
    dnnl_memory_desc_t a_md, b_md, c_md;  // with M = DNNL_RUNTIME_DIM_VAL when runtime_m
    int64_t a_row, a_col, b_row, b_col, ldc, n, k;
    dnnl_data_type_t a_dt, b_dt;
    int runtime_m;
    int64_t mem_m;                       // the M the memory handles below were made for (-1: none)
    dnnl_memory_t a_mem, b_mem, c_mem;   // reused while M stays the same: only the data pointers change
};

static dnnl_engine_t engine;
static dnnl_stream_t stream;
static int engine_state;  // 0 untried, 1 ok, -1 failed

static int ensure_engine(void) {
    if (engine_state == 0) {
        engine_state = (dnnl_engine_create(&engine, dnnl_cpu, 0) == dnnl_success
                        && dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) == dnnl_success) ? 1 : -1;
    }
    return engine_state == 1;
}

int esft_dnnl_available(void) { return ensure_engine(); }
void esft_dnnl_set_threads(int n) { omp_set_num_threads(n > 0 ? n : 1); }

const char *esft_dnnl_isa(void) {
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    default: return "unknown";
    }
}

static int md2(dnnl_memory_desc_t *md, int64_t rows, int64_t cols, int64_t rs, int64_t cs, dnnl_data_type_t dt) {
    dnnl_dims_t dims = {rows, cols}, strides = {rs, cs};
    return dnnl_memory_desc_init_by_strides(md, 2, dims, dt, strides) == dnnl_success;
}

esft_matmul *esft_matmul_create(int64_t n, int64_t k, int64_t a_row, int64_t a_col, int64_t b_row, int64_t b_col,
                                int64_t ldc, int a_bf16, int b_bf16, int accumulate, int runtime_m, int64_t fixed_m,
                                int *status, char *impl, size_t impl_len) {
    *status = dnnl_runtime_error;
    if (!ensure_engine()) return NULL;
    esft_matmul *mm = calloc(1, sizeof *mm);
    if (!mm) return NULL;
    mm->a_dt = a_bf16 ? dnnl_bf16 : dnnl_f32; mm->b_dt = b_bf16 ? dnnl_bf16 : dnnl_f32;
    mm->a_row = a_row; mm->a_col = a_col; mm->b_row = b_row; mm->b_col = b_col; mm->ldc = ldc;
    mm->n = n; mm->k = k; mm->runtime_m = runtime_m; mm->mem_m = -1;
    int64_t m = runtime_m ? DNNL_RUNTIME_DIM_VAL : fixed_m;
    md2(&mm->a_md, m, k, a_row, a_col, mm->a_dt);
    md2(&mm->b_md, k, n, b_row, b_col, mm->b_dt);
    md2(&mm->c_md, m, n, ldc, 1, dnnl_f32);
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr = NULL; dnnl_post_ops_t ops = NULL; dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t st = dnnl_matmul_desc_init(&desc, &mm->a_md, &mm->b_md, NULL, &mm->c_md);
    if (st == dnnl_success) st = dnnl_primitive_attr_create(&attr);
    if (st == dnnl_success && accumulate) {
        st = dnnl_post_ops_create(&ops);
        if (st == dnnl_success) st = dnnl_post_ops_append_sum(ops, 1.0f);
        if (st == dnnl_success) st = dnnl_primitive_attr_set_post_ops(attr, ops);
    }
    if (st == dnnl_success) st = dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL);
    if (st == dnnl_success) {
        const char *name = NULL;
        if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name) == dnnl_success && name && impl_len) {
            strncpy(impl, name, impl_len - 1); impl[impl_len - 1] = 0;
        }
        st = dnnl_primitive_create(&mm->prim, pd);
    }
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (ops) dnnl_post_ops_destroy(ops);
    if (attr) dnnl_primitive_attr_destroy(attr);
    *status = st;
    if (st != dnnl_success) { esft_matmul_destroy(mm); return NULL; }
    return mm;
}

static void drop_memory(esft_matmul *mm) {
    if (mm->a_mem) dnnl_memory_destroy(mm->a_mem);
    if (mm->b_mem) dnnl_memory_destroy(mm->b_mem);
    if (mm->c_mem) dnnl_memory_destroy(mm->c_mem);
    mm->a_mem = mm->b_mem = mm->c_mem = NULL; mm->mem_m = -1;
}

int esft_matmul_run(esft_matmul *mm, int64_t m, const void *a, const void *b, float *c) {
    dnnl_status_t st = dnnl_success;
    if (mm->mem_m != m) {
        // Memory handles need concrete dimensions: made again only when M changes (three small objects,
        // no data copied), so a layer called with the same token count every step allocates nothing.
        drop_memory(mm);
        dnnl_memory_desc_t a_md, b_md, c_md;
        md2(&a_md, m, mm->k, mm->a_row, mm->a_col, mm->a_dt);
        md2(&b_md, mm->k, mm->n, mm->b_row, mm->b_col, mm->b_dt);
        md2(&c_md, m, mm->n, mm->ldc, 1, dnnl_f32);
        st = dnnl_memory_create(&mm->a_mem, &a_md, engine, DNNL_MEMORY_NONE);
        if (st == dnnl_success) st = dnnl_memory_create(&mm->b_mem, &b_md, engine, DNNL_MEMORY_NONE);
        if (st == dnnl_success) st = dnnl_memory_create(&mm->c_mem, &c_md, engine, DNNL_MEMORY_NONE);
        if (st != dnnl_success) { drop_memory(mm); return (int)st; }
        mm->mem_m = m;
    }
    dnnl_memory_set_data_handle(mm->a_mem, (void *)a);
    dnnl_memory_set_data_handle(mm->b_mem, (void *)b);
    dnnl_memory_set_data_handle(mm->c_mem, c);
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, mm->a_mem}, {DNNL_ARG_WEIGHTS, mm->b_mem}, {DNNL_ARG_DST, mm->c_mem}};
    st = dnnl_primitive_execute(mm->prim, stream, 3, args);
    if (st == dnnl_success) st = dnnl_stream_wait(stream);
    return (int)st;
}

void esft_matmul_destroy(esft_matmul *mm) {
    if (!mm) return;
    drop_memory(mm);
    if (mm->prim) dnnl_primitive_destroy(mm->prim);
    free(mm);
}
