// HDF5 values that C exposes only as macros (or macros over hidden globals), which Swift cannot import.
// Keep this file tiny: one function per macro, nothing else.
#ifndef ESFT_CHDF5SHIMS_H
#define ESFT_CHDF5SHIMS_H
#include <hdf5.h>

hid_t esft_h5t_native_float(void);
hid_t esft_h5t_native_double(void);
hid_t esft_h5t_native_int32(void);
hid_t esft_h5t_native_int64(void);
hid_t esft_h5t_native_uint8(void);
hid_t esft_h5t_native_uint16(void);
hid_t esft_h5t_c_s1(void);
hid_t esft_h5p_file_access(void);
hid_t esft_h5p_file_create(void);
hid_t esft_h5p_dataset_create(void);
hid_t esft_h5t_ieee_f32le(void);
hid_t esft_h5t_std_u16le(void);
hid_t esft_h5t_std_i64le(void);
unsigned esft_h5f_acc_trunc(void);
unsigned esft_h5f_acc_excl(void);
unsigned esft_h5f_acc_rdonly(void);
unsigned esft_h5f_acc_rdwr(void);
#endif
