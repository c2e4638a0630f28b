/*
 * gpu.c - NVIDIA GPUs for local sandboxes.
 *
 * nvidia-smi tells which GPUs the host has. A sandbox that asks for one gets
 * the device nodes of the first gpu_count GPUs plus the control nodes, and
 * /sys read-only (the driver's user-space libraries already live under /usr,
 * which every sandbox sees read-only). A sandbox with gpu null gets none of
 * these: bubblewrap's /dev holds only null, zero, random and the like.
 */
#include "core/providers/local/gpu.h"
#include "core/lib/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *find_smi(void)
{
	static const char *const c[] = {"/usr/bin/nvidia-smi", "/usr/local/bin/nvidia-smi",
					"/usr/local/nvidia/bin/nvidia-smi", NULL};
	for (int i = 0; c[i]; i++)
		if (access(c[i], X_OK) == 0)
			return c[i];
	return NULL;
}

int gpu_check(const char *type, int count, const char *sandbox, char *err, size_t n)
{
	const char *smi = find_smi();
	if (!smi) {
		snprintf(err, n, "sandbox %s: gpu \"%s\" asked for, but this host has no NVIDIA GPU (nvidia-smi not found); set \"gpu\": null or use a provider with that GPU",
			 sandbox, type);
		return -ENODEV;
	}
	char *argv[] = {(char *)smi, "--query-gpu=name", "--format=csv,noheader", NULL};
	struct sbuf out = {0};
	int r = run_capture(argv, &out, 64 << 10);
	if (r < 0) {
		snprintf(err, n, "sandbox %s: cannot run nvidia-smi: %s", sandbox, strerror(-r));
		sbuf_free(&out);
		return -ENODEV;
	}
	char names[1024] = "";
	int match = 0, total = 0;
	size_t used = 0;
	for (char *line = out.data ? out.data : "", *next; *line; line = next) {
		next = line + strcspn(line, "\n");
		if (*next)
			*next++ = '\0';
		line[strcspn(line, "\r")] = '\0';
		if (!line[0])
			continue;
		total++;
		used += (size_t)snprintf(names + used, sizeof(names) > used ? sizeof(names) - used : 0, "%s%s",
					 used ? ", " : "", line);
		if (used >= sizeof(names))
			used = sizeof(names) - 1;
		if (strcasestr(line, type))
			match++;
	}
	sbuf_free(&out);
	if (!match) {
		snprintf(err, n, "sandbox %s: gpu \"%s\" asked for, but this host has %s%s", sandbox, type,
			 total ? "only: " : "no working NVIDIA GPU", names);
		return -ENODEV;
	}
	if (match < count) {
		snprintf(err, n, "sandbox %s: gpu_count %d asked for, but this host has %d %s GPU(s)", sandbox, count, match, type);
		return -ENODEV;
	}
	return 0;
}

void gpu_bwrap_args(int count, void (*add)(void *arg, const char *s), void *arg)
{
	char path[64];
	for (int i = 0; i < count; i++) {
		snprintf(path, sizeof(path), "/dev/nvidia%d", i);
		if (access(path, F_OK) == 0) {
			add(arg, "--dev-bind");
			add(arg, path);
			add(arg, path);
		}
	}
	static const char *const ctl[] = {"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools",
					  "/dev/nvidia-modeset", "/dev/nvidia-caps", NULL};
	for (int i = 0; ctl[i]; i++) {
		if (access(ctl[i], F_OK) == 0) {
			add(arg, "--dev-bind");
			add(arg, ctl[i]);
			add(arg, ctl[i]);
		}
	}
	add(arg, "--ro-bind");
	add(arg, "/sys");
	add(arg, "/sys");
	/* Drivers installed outside /usr (container images often use this). */
	if (access("/usr/local/nvidia", F_OK) == 0) {
		add(arg, "--ro-bind");
		add(arg, "/usr/local/nvidia");
		add(arg, "/usr/local/nvidia");
	}
}
