/*
 * hf.h - download a model repository from the Hugging Face hub into a shared
 * on-disk cache, laid out exactly like huggingface_hub's cache so that every
 * tool on the host (seerfs, transformers, huggingface-cli) downloads a model
 * once:
 *
 *   {cache}/models--{org}--{name}/blobs/{sha256 or git oid}
 *   {cache}/models--{org}--{name}/snapshots/{commit}/{path} -> ../../blobs/..
 *   {cache}/models--{org}--{name}/refs/{revision}            (holds the commit)
 *   {cache}/.locks/models--{org}--{name}/{blob}.lock          (flock, shared
 *                                                 with huggingface_hub)
 *   {cache}/models--{org}--{name}/.seerfs/{commit}.complete   (ours: the file
 *        list of a finished snapshot, so a later call - or an offline one -
 *        knows the snapshot is whole; huggingface_hub ignores it)
 *
 * Downloads go to blobs/{hash}.incomplete, resume with HTTP Range, run in
 * parallel, and are verified (sha256 for LFS files, git blob sha1 and size
 * for the others) before being renamed to their final name.  Safe to call
 * from several threads or processes at once for the same model.
 *
 * Every function returns 0 or a negative errno and, on failure, writes a
 * message a person can act on into the caller's err buffer.  The token never
 * appears in any message, log line or URL.
 */
#ifndef SEER_HF_H
#define SEER_HF_H

#include <stddef.h>
#include <stdint.h>

struct hf_progress {
	uint64_t done, total;	/* bytes, counting already-cached data as done */
	double rate_bps;	/* recent network download rate, bytes/s */
	double eta_s;		/* seconds left at that rate; < 0 when unknown */
	const char *file;	/* repo path of one file, or NULL for the whole fetch */
};

/* Called every ~200 ms while downloading (once per active file, then once
 * overall with file == NULL), and once per finished file with
 * done == total.  Runs on the calling thread; keep it quick. */
typedef void (*hf_progress_fn)(void *arg, const struct hf_progress *p);
/* One human-readable line per event: file started, resumed, finished,
 * retried, waiting for another downloader, using the offline cache. */
typedef void (*hf_log_fn)(void *arg, const char *line);

struct hf_opts {
	const char *endpoint;	/* NULL: $HF_ENDPOINT, else https://huggingface.co */
	const char *token;	/* NULL: none.  Sent as a Bearer header to the
				 * endpoint host only; never logged. */
	const char *cache_dir;	/* NULL: $HF_HUB_CACHE, $HF_HOME/hub, else
				 * ~/.cache/huggingface/hub */
	int parallel;		/* files downloaded at once; <= 0: 4 */
	int max_retries;	/* per file, on transient network errors, resuming
				 * with Range; 0: 3, < 0: never retry */
	hf_progress_fn progress;
	hf_log_fn log;
	void *arg;		/* passed to progress and log */
	volatile int *cancel;	/* set non-zero (any thread) to abort: -ECANCELED;
				 * partial files are kept for a later resume */
};

/*
 * Downloads (or finds cached) repository `id` ("org/name") at `revision`
 * (NULL = "main"; a branch, tag or 40-hex commit).  On success writes the
 * absolute path of the snapshot directory into out_path.
 *
 * A fully cached commit costs one metadata request (none when `revision` is a
 * commit hash, or with HF_HUB_OFFLINE=1); when the endpoint is unreachable a
 * complete cached snapshot named by refs/{revision} is used instead.
 *
 * Errors: -ENOENT repo/revision/file not found, -EACCES gated/private/bad
 * token, -ECONNREFUSED/-EHOSTUNREACH/-ETIMEDOUT/-EIO network or HTTP 5xx,
 * -EAGAIN rate limited (429), -ENOSPC/-EDQUOT disk full, -EBADMSG checksum
 * mismatch, -ECANCELED, -EINVAL bad arguments, -EPROTO unexpected reply.
 * The token is only what the caller passes: to honour HF_TOKEN or a
 * sandbox secret, pass it in o->token (the messages tell people to set it).
 */
int hf_fetch(const struct hf_opts *o, const char *id, const char *revision,
	     char *out_path, size_t out_len, char *err, size_t errlen);

#endif
