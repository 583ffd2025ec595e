/* MPI hello: each rank reports rank, size, node, and the inodes of its user and
   mount namespaces (ranks joined with ch-run --join share them).
   Usage: hello [--fail RANK CODE] [--exit RANK CODE] [--sleep SECONDS]
   --fail: that rank exits with CODE right after MPI_Init, without finalizing
   (the launcher then aborts the others); --exit: that rank exits with CODE
   after a clean MPI_Finalize; --sleep: sleep before finalizing. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned long ns_inode(const char *name) {
  char path[64];
  struct stat st;
  snprintf(path, sizeof path, "/proc/self/ns/%s", name);
  return stat(path, &st) == 0 ? (unsigned long)st.st_ino : 0;
}

int main(int argc, char **argv) {
  int rank, size, len, fail_rank = -1, fail_code = 0, exit_rank = -1, exit_code = 0, sleep_s = 0;
  char host[MPI_MAX_PROCESSOR_NAME];
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--fail") && i + 2 < argc) { fail_rank = atoi(argv[i + 1]); fail_code = atoi(argv[i + 2]); i += 2; }
    else if (!strcmp(argv[i], "--exit") && i + 2 < argc) { exit_rank = atoi(argv[i + 1]); exit_code = atoi(argv[i + 2]); i += 2; }
    else if (!strcmp(argv[i], "--sleep") && i + 1 < argc) sleep_s = atoi(argv[++i]);
  }
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Get_processor_name(host, &len);
  const char *node = getenv("SLURMD_NODENAME"); /* fake Slurm nodes share one host name */
  printf("hello rank %d of %d on %s userns %lu mntns %lu uid %d node %s\n", rank, size, host,
         ns_inode("user"), ns_inode("mnt"), (int)getuid(), node && *node ? node : "-");
  fflush(stdout);
  if (rank == fail_rank) { fprintf(stderr, "rank %d failing with %d\n", rank, fail_code); exit(fail_code); }
  int one = 1, sum = 0;
  MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (sum != size) { fprintf(stderr, "rank %d: allreduce gave %d, want %d\n", rank, sum, size); MPI_Abort(MPI_COMM_WORLD, 2); }
  if (sleep_s) sleep(sleep_s);
  MPI_Finalize();
  if (rank == 0) printf("hello done: %d ranks, allreduce ok\n", size);
  if (rank == exit_rank) { fprintf(stderr, "rank %d exiting with %d\n", rank, exit_code); return exit_code; }
  return 0;
}
