// MPI values that C exposes only as macros (or macros over hidden globals), which Swift cannot import.
// Keep this file tiny: one function per macro, nothing else.
#ifndef ESFT_CMPISHIMS_H
#define ESFT_CMPISHIMS_H
#include <mpi.h>

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
#endif
