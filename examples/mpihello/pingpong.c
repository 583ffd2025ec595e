/* Ping-pong between ranks 0 and 1 (others idle): latency at 8 bytes and
   bandwidth per size. Usage: pingpong [MAX_BYTES [ITERS]]. Output (rank 0):
   "pingpong BYTES bytes LAT us BW MB/s". */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  int rank, size;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size < 2) { if (rank == 0) fprintf(stderr, "pingpong needs 2 ranks\n"); MPI_Abort(MPI_COMM_WORLD, 1); }
  long max = argc > 1 ? atol(argv[1]) : 1 << 22;
  int iters = argc > 2 ? atoi(argv[2]) : 1000;
  char *buf = malloc(max);
  if (!buf) MPI_Abort(MPI_COMM_WORLD, 1);
  memset(buf, rank, max);
  for (long bytes = 8; bytes <= max; bytes *= 8) {
    int it = bytes >= (1 << 20) ? (iters / 10 > 10 ? iters / 10 : 10) : iters;
    MPI_Barrier(MPI_COMM_WORLD);
    double t = 0;
    if (rank < 2) {
      int peer = 1 - rank;
      for (int i = -10; i < it; i++) { /* 10 warm-up rounds */
        if (i == 0) t = MPI_Wtime();
        if (rank == 0) {
          MPI_Send(buf, bytes, MPI_CHAR, peer, 0, MPI_COMM_WORLD);
          MPI_Recv(buf, bytes, MPI_CHAR, peer, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else {
          MPI_Recv(buf, bytes, MPI_CHAR, peer, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
          MPI_Send(buf, bytes, MPI_CHAR, peer, 0, MPI_COMM_WORLD);
        }
      }
      t = (MPI_Wtime() - t) / it / 2; /* one-way */
    }
    if (rank == 0) printf("pingpong %ld bytes %.2f us %.1f MB/s\n", bytes, t * 1e6, bytes / t / 1e6);
  }
  if (rank == 0) printf("pingpong ok\n");
  free(buf);
  MPI_Finalize();
  return 0;
}
