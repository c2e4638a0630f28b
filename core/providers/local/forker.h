/*
 * forker.h - the local provider's state in one seerfs: the thread that
 * forks every sandbox.
 *
 * bubblewrap sets PR_SET_PDEATHSIG, which fires when the *thread* that
 * forked it ends, so sandboxes are forked from one thread that lives as
 * long as the context, not from the provisioning thread that starts them.
 */
#ifndef SEER_LOCAL_FORKER_H
#define SEER_LOCAL_FORKER_H

struct seer_ctx;

/* The provider's init and cleanup (struct seer_provider): cleanup ends
 * the thread (after every sandbox stopped). */
int local_state_init(struct seer_ctx *ctx, void **state);
void local_state_cleanup(struct seer_ctx *ctx, void *state);

/* Runs fn(arg) on the forker thread of state (the provider's, started on
 * first use) and returns its result; runs it here when there is no state
 * (the context closed) or no thread can be made. */
int local_in_forker(void *state, int (*fn)(void *), void *arg);

#endif
