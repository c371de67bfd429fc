/* The user's worst case: 4 KiB pread()s of one cached page, in a loop.
 * Prints nanoseconds per pread. Usage: pread_loop FILE COUNT */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char buf[4096];
	long count = argc > 2 ? atol(argv[2]) : 1000000;
	int fd = open(argv[1], O_RDONLY);
	struct timespec a, b;

	if (fd < 0 || pread(fd, buf, sizeof(buf), 0) < 0)
		return 1;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < count; i++)
		if (pread(fd, buf, sizeof(buf), 0) != sizeof(buf))
			return 1;
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / count);
	return 0;
}
