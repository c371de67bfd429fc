/* Cached reads in a loop. Prints nanoseconds per read.
 * Usage: pread_loop FILE COUNT [BLOCK]
 *   BLOCK 4096 (the default) on a one-page file: the user's worst case, 4 KiB
 *   pread()s of one cached page; a larger BLOCK on a larger file: sequential
 *   reads of BLOCK bytes through the file, from its start again at its end. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long count = argc > 2 ? atol(argv[2]) : 1000000;
	long block = argc > 3 ? atol(argv[3]) : 4096;
	int fd = open(argv[1], O_RDONLY);
	struct timespec a, b;
	struct stat st;
	char *buf;
	long blocks;

	if (fd < 0 || fstat(fd, &st) < 0 || block <= 0 || !(buf = malloc(block)))
		return 1;
	blocks = st.st_size / block;
	if (blocks < 1 || pread(fd, buf, block, 0) != block)
		return 1;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < count; i++)
		if (pread(fd, buf, block, (i % blocks) * block) != block)
			return 1;
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / count);
	return 0;
}
