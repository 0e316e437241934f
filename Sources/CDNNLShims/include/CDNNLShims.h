// What Swift cannot conveniently build itself from oneDNN's C API: matmul primitives (their descriptors are
// fixed-size C arrays and unions), and the OpenMP thread count oneDNN's Debian build runs with.
#ifndef CDNNL_SHIMS_H
#define CDNNL_SHIMS_H
#include <stdint.h>
#include <stddef.h>

/// A created oneDNN matmul primitive: C[M,N] (+)= A[M,K] · B[K,N], row-major C, accumulation fp32.
/// M is a run-time dimension (given per call), so one primitive serves every token count.
typedef struct esft_matmul esft_matmul;

/// Creates the primitive, or returns NULL (oneDNN has no implementation; `status` says why).
/// Strides are in elements: A is (a_row, a_col), B is (b_row, b_col), C rows are ldc apart.
/// a_bf16 / b_bf16: the operand is bf16 (else fp32). accumulate: C += A·B (else C = A·B).
/// `impl` receives oneDNN's implementation name (e.g. "brg:avx512_core_bf16").
esft_matmul *esft_matmul_create(int64_t n, int64_t k, int64_t a_row, int64_t a_col, int64_t b_row, int64_t b_col,
                                int64_t ldc, int a_bf16, int b_bf16, int accumulate, int runtime_m, int64_t fixed_m,
                                int *status, char *impl, size_t impl_len);
/// Runs it for m rows; 0 on success, else a dnnl_status_t.
int esft_matmul_run(esft_matmul *mm, int64_t m, const void *a, const void *b, float *c);
void esft_matmul_destroy(esft_matmul *mm);

/// The OpenMP threads oneDNN uses for calls from this thread.
void esft_dnnl_set_threads(int n);
/// 1 when the oneDNN CPU engine could be created (library present and usable).
int esft_dnnl_available(void);
/// The highest instruction set oneDNN will use here ("avx512_core_bf16", ...), from dnnl_get_effective_cpu_isa.
const char *esft_dnnl_isa(void);
#endif
