#include "CMPIShims.h"

MPI_Comm esft_mpi_comm_world(void) { return MPI_COMM_WORLD; }
MPI_Datatype esft_mpi_float(void) { return MPI_FLOAT; }
MPI_Datatype esft_mpi_double(void) { return MPI_DOUBLE; }
MPI_Datatype esft_mpi_int32(void) { return MPI_INT32_T; }
MPI_Datatype esft_mpi_int64(void) { return MPI_INT64_T; }
MPI_Datatype esft_mpi_uint8(void) { return MPI_UINT8_T; }
MPI_Op esft_mpi_sum(void) { return MPI_SUM; }
MPI_Op esft_mpi_max(void) { return MPI_MAX; }
void *esft_mpi_in_place(void) { return MPI_IN_PLACE; }
MPI_Errhandler esft_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
