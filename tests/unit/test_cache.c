/*
 * test_cache.c - root/'s cache policy (fs/root/cache.c) without a mount:
 * the idle/busy gate asks the provider at most once per TTL, counts an
 * error as busy, reports an unannounced idle->busy change once, and a job
 * announced while it asks keeps it busy; the negative entry set keeps
 * each entry once, refuses anything once full, and hands everything back.
 */
#include "fs/root/cache.h"
#include "tests/unit/check.h"

#include <stdlib.h>
#include <time.h>

struct fake {
	int answer;
	int asked;
	struct idle_gate *g;
	int announce;          /* call idle_gate_mark_busy while asked */
};

static int ask(void *arg)
{
	struct fake *f = arg;
	f->asked++;
	if (f->announce)
		idle_gate_mark_busy(f->g);
	return f->answer;
}

static void gate(void)
{
	struct idle_gate g;
	struct fake f = {.answer = 0, .g = &g};
	struct idle_state c;
	idle_gate_init(&g, -1, ask, &f);
	CHECK(g.timeout == CACHE_IDLE_TIMEOUT, "default timeout %f", g.timeout);
	idle_gate_peek(&g, &c);
	CHECK(!c.idle, "busy until the provider was asked");
	CHECK(idle_gate_get(&g, &c) == 0 && c.idle && c.t == CACHE_IDLE_TIMEOUT && f.asked == 1,
	      "idle after asking: idle %d asked %d", c.idle, f.asked);
	uint64_t e0 = c.epoch;
	idle_gate_get(&g, &c);
	CHECK(f.asked == 1, "asked again within the TTL: %d", f.asked);
	idle_gate_peek(&g, &c);
	CHECK(c.idle, "a fresh answer peeks idle");

	/* A job nobody announced: reported once, the epoch moves. */
	f.answer = 1;
	idle_gate_recheck(&g);
	CHECK(idle_gate_get(&g, &c) == 1 && !c.idle && c.epoch != e0, "unannounced job seen");
	idle_gate_recheck(&g);
	CHECK(idle_gate_get(&g, &c) == 0 && !c.idle, "reported once");

	/* An error is busy. */
	f.answer = -5;
	idle_gate_recheck(&g);
	idle_gate_get(&g, &c);
	CHECK(!c.idle && idle_gate_busy(&g), "an error counts as busy");

	/* Announced: busy at once, whatever the last answer was. */
	f.answer = 0;
	idle_gate_recheck(&g);
	idle_gate_get(&g, &c);
	CHECK(c.idle, "idle again");
	struct idle_state before = c;
	idle_gate_mark_busy(&g);
	CHECK(idle_gate_moved(&g, &before), "the epoch moved");
	idle_gate_get(&g, &c);
	CHECK(!c.idle, "busy after mark_busy, within the TTL");

	/* A job announced while the provider is asked: its busy stands. */
	f.announce = 1;
	idle_gate_recheck(&g);
	CHECK(idle_gate_get(&g, &c) == 0 && !c.idle, "an answer older than the announcement is dropped");

	struct idle_gate g2;
	idle_gate_init(&g2, 5.0, NULL, NULL);
	CHECK(g2.timeout == 5.0, "timeout given");
	idle_gate_get(&g2, &c);
	CHECK(!c.idle, "nobody to ask: busy");

	/* 0: caching off, answered as busy without asking. */
	struct idle_gate g3;
	f.asked = 0;
	f.answer = 0;
	idle_gate_init(&g3, 0, ask, &f);
	CHECK(idle_gate_get(&g3, &c) == 0 && !c.idle && f.asked == 0, "timeout 0: never idle, never asked");
	idle_gate_peek(&g3, &c);
	CHECK(!c.idle, "timeout 0: peek says busy too");
}

static void negs(void)
{
	struct neg_set s;
	neg_set_init(&s, 3000);
	CHECK(neg_set_add(&s, 1, 0, "a") == 1, "add");
	CHECK(neg_set_add(&s, 1, 0, "a") == 1 && s.n == 1, "once: n %zu", s.n);
	CHECK(neg_set_add(&s, 2, 0, "a") == 1 && s.n == 2, "another parent is another entry");
	CHECK(neg_set_add(&s, 2, 5, "a") == 1 && s.n == 2, "a newer tag: the same entry");
	char name[32];
	int ok = 1;
	for (int i = 0; i < 2998; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		ok &= neg_set_add(&s, 7, 0, name);
	}
	CHECK(ok && s.n == 3000, "grown past the first table: %zu", s.n);
	CHECK(neg_set_add(&s, 7, 0, "one-more") == 0, "refused past the cap");
	CHECK(neg_set_add(&s, 7, 0, "f17") == 0, "a full set refuses everything: its owner expires it all");
	struct neg_entry *l = neg_set_take(&s);
	CHECK(s.n == 0 && neg_set_add(&s, 9, 0, "x") == 1, "empty and usable after take");
	size_t n = 0;
	int found = 0;
	for (struct neg_entry *e = l; e; e = e->next, n++)
		found |= e->parent == 2 && e->tag == 5 && !strcmp(e->name, "a");
	CHECK(n == 3000 && found, "handed back: %zu", n);
	CHECK(neg_list_expire(NULL, l, 0, 0) == 3000, "freed");
	neg_set_destroy(&s);
}

int main(void)
{
	gate();
	negs();
	return check_done("test_cache");
}
