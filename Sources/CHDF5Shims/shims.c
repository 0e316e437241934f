#include "CHDF5Shims.h"

// H5T_NATIVE_* and H5P_* expand to library globals that are valid only after H5open().
hid_t esft_h5t_native_float(void) { H5open(); return H5T_NATIVE_FLOAT; }
hid_t esft_h5t_native_double(void) { H5open(); return H5T_NATIVE_DOUBLE; }
hid_t esft_h5t_native_int32(void) { H5open(); return H5T_NATIVE_INT32; }
hid_t esft_h5t_native_int64(void) { H5open(); return H5T_NATIVE_INT64; }
hid_t esft_h5t_native_uint8(void) { H5open(); return H5T_NATIVE_UINT8; }
hid_t esft_h5t_native_uint16(void) { H5open(); return H5T_NATIVE_UINT16; }
hid_t esft_h5t_c_s1(void) { H5open(); return H5T_C_S1; }
hid_t esft_h5p_file_access(void) { H5open(); return H5P_FILE_ACCESS; }
hid_t esft_h5p_file_create(void) { H5open(); return H5P_FILE_CREATE; }
hid_t esft_h5p_dataset_create(void) { H5open(); return H5P_DATASET_CREATE; }
hid_t esft_h5t_ieee_f32le(void) { H5open(); return H5T_IEEE_F32LE; }
hid_t esft_h5t_std_u16le(void) { H5open(); return H5T_STD_U16LE; }
hid_t esft_h5t_std_i64le(void) { H5open(); return H5T_STD_I64LE; }
unsigned esft_h5f_acc_trunc(void) { return H5F_ACC_TRUNC; }
unsigned esft_h5f_acc_excl(void) { return H5F_ACC_EXCL; }
unsigned esft_h5f_acc_rdonly(void) { return H5F_ACC_RDONLY; }
unsigned esft_h5f_acc_rdwr(void) { return H5F_ACC_RDWR; }

// At load, before any HDF5 call: no atexit cleanup. HDF5 1.10's exit handler (H5_term_library) closes files
// whose close already failed (a full disk) and crashes in H5F__close_cb; esft closes every file it writes
// itself, and one whose close failed is an incomplete output that is removed or never used.
__attribute__((constructor)) static void esft_h5_no_atexit(void) { H5dont_atexit(); }
