// Values that C exposes only as macros (or macros over hidden globals), which Swift cannot import.
// Keep this file tiny: one function per macro, nothing else.
#ifndef ESFT_CSHIMS_H
#define ESFT_CSHIMS_H
#include <mpi.h>
#include <hdf5.h>

MPI_Comm esft_mpi_comm_world(void);
MPI_Datatype esft_mpi_float(void);
MPI_Datatype esft_mpi_double(void);
MPI_Datatype esft_mpi_int32(void);
MPI_Datatype esft_mpi_int64(void);
MPI_Datatype esft_mpi_uint8(void);
MPI_Op esft_mpi_sum(void);
MPI_Op esft_mpi_max(void);
void *esft_mpi_in_place(void);
MPI_Errhandler esft_mpi_errors_return(void);

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
