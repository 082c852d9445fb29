/* Baseline for bench/map-updates.ts: the same hash map updates from plain C, in the same run,
 * so TypeScript's figures can be read as a ratio to what the kernel allows from any language.
 * Usage: map_update N RUNS -> prints "single <per-sec> batch <per-sec>" medians. */
#include <linux/bpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long sys_bpf(int cmd, union bpf_attr *a) { return syscall(SYS_bpf, cmd, a, sizeof(*a)); }

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 100000, runs = argc > 2 ? atoi(argv[2]) : 5, chunk = 4096;
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.map_type = BPF_MAP_TYPE_HASH;
	a.key_size = 8;
	a.value_size = 16;
	a.max_entries = n;
	int fd = sys_bpf(BPF_MAP_CREATE, &a);
	if (fd < 0) {
		perror("BPF_MAP_CREATE");
		return 1;
	}
	char *k = calloc(n, 8), *v = calloc(n, 16);
	for (int i = 0; i < n; i++) {
		*(unsigned *)(k + 8 * i) = i >> 4;
		*(unsigned *)(k + 8 * i + 4) = i & 15;
		*(unsigned *)(v + 16 * i) = 0x0a000000 | i;
	}
	double single[64], batch[64];
	for (int r = 0; r < runs && r < 64; r++) {
		double t = now();
		for (int i = 0; i < n; i++) {
			memset(&a, 0, sizeof(a));
			a.map_fd = fd;
			a.key = (unsigned long)(k + 8 * i);
			a.value = (unsigned long)(v + 16 * i);
			if (sys_bpf(BPF_MAP_UPDATE_ELEM, &a)) {
				perror("BPF_MAP_UPDATE_ELEM");
				return 1;
			}
		}
		single[r] = n / (now() - t);
	}
	for (int r = 0; r < runs && r < 64; r++) {
		double t = now();
		for (int c = 0; c < n; c += chunk) {
			memset(&a, 0, sizeof(a));
			a.batch.keys = (unsigned long)(k + 8 * c);
			a.batch.values = (unsigned long)(v + 16 * c);
			a.batch.count = n - c < chunk ? n - c : chunk;
			a.batch.map_fd = fd;
			if (sys_bpf(BPF_MAP_UPDATE_BATCH, &a)) {
				perror("BPF_MAP_UPDATE_BATCH");
				return 1;
			}
		}
		batch[r] = n / (now() - t);
	}
	qsort(single, runs, sizeof(double), cmp);
	qsort(batch, runs, sizeof(double), cmp);
	printf("single %.0f batch %.0f\n", single[runs / 2], batch[runs / 2]);
	return 0;
}
