/*
 * cell_client.h - the cell client of notebook sessions in C (seerfs-agent
 * --cell; see cell_client.c and core/sessions/sessions.c).
 */
#ifndef SEER_CELL_CLIENT_H
#define SEER_CELL_CLIENT_H

/* Runs one cell from the environment; returns the process's exit status. */
int cell_client_main(void);

#endif
