/* pass_stub.c - temporary: root/ not served (used only while fs/pass.c is absent). */
#include "fs/fs.h"
#include <errno.h>
struct pass_fs *pass_new(struct seer_fs *fs, struct sandbox *sb, int root_fd) { (void)fs; (void)sb; (void)root_fd; return NULL; }
void pass_kill(struct pass_fs *p) { (void)p; }
int pass_root_entry(struct pass_fs *p, struct fuse_entry_param *e) { (void)p; (void)e; return -ENOTCONN; }
void pass_invalidate(struct pass_fs *p) { (void)p; }
void pass_init_conn(struct fuse_conn_info *conn, struct seer_fs *fs) { (void)conn; (void)fs; }
const struct fuse_lowlevel_ops pass_ops;
