/* Allreduce of doubles: checks the sum and reports bandwidth per size.
   Usage: allreduce [MAX_BYTES [ITERS]]. Output (rank 0):
   "allreduce BYTES bytes ITERS iters TIME_US us/op BW MB/s" then "allreduce ok". */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  int rank, size;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  long max = argc > 1 ? atol(argv[1]) : 1 << 22;
  int iters = argc > 2 ? atoi(argv[2]) : 50;
  size_t n = max / sizeof(double);
  double *in = malloc(n * sizeof(double)), *out = malloc(n * sizeof(double));
  if (!in || !out) MPI_Abort(MPI_COMM_WORLD, 1);
  for (size_t i = 0; i < n; i++) in[i] = rank + 1;
  for (long bytes = 8; bytes <= max; bytes *= 8) {
    int cnt = bytes / sizeof(double);
    MPI_Allreduce(in, out, cnt, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD); /* warm-up */
    MPI_Barrier(MPI_COMM_WORLD);
    double t = MPI_Wtime();
    for (int i = 0; i < iters; i++) MPI_Allreduce(in, out, cnt, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    t = (MPI_Wtime() - t) / iters;
    double want = size * (size + 1) / 2.0;
    for (int i = 0; i < cnt; i++)
      if (out[i] != want) { fprintf(stderr, "rank %d: element %d is %g, want %g\n", rank, i, out[i], want); MPI_Abort(MPI_COMM_WORLD, 3); }
    if (rank == 0) printf("allreduce %ld bytes %d iters %.2f us/op %.1f MB/s\n", bytes, iters, t * 1e6, bytes / t / 1e6);
  }
  if (rank == 0) printf("allreduce ok\n");
  free(in); free(out);
  MPI_Finalize();
  return 0;
}
