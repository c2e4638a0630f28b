#seerfs-ssh-agent
# agent_remote.pl - the resident agent of one remote sandbox: on an SSH host
# (the ssh provider) or in a container of a remote Docker engine.
#
# core/lib/agent_remote.c starts it once per sandbox, inside the sandbox's
# bubblewrap over an SSH exec channel, or in the container over an Engine
# API exec, and that one stream then carries every command of the sandbox:
# a command costs a fork here instead of a new channel, a login shell and a
# new bubblewrap (together about 15 ms), or a new exec (about 100 ms). Its text comes on its
# stdin, up to __END__, so no ps shows it. It prints one line when it is
# ready, then speaks in frames on stdin and stdout:
#
#   one type byte, a 32-bit job (or request) id, a 32-bit length, the data
#   (all big-endian).
#   seerfs to agent: S spec (start job id), I stdin bytes, C stdin closed,
#                    K "PID SIG TREE" (a signal request; answered by R)
#   agent to seerfs: P pid, O stdout, E stderr, A stdin bytes taken (the
#                    credit that bounds what seerfs sends ahead), c the
#                    command closed its stdin, X wait status, R the number
#                    of processes signalled
#   file operations for root/ (fs/root/sftpfs_agent.c), what SFTP v3 cannot
#   say: seerfs sends F "OP\0PATH\0ARGS..." (NUL-separated), the agent
#   answers f "ERRNO\0FIELDS..." (ERRNO 0: done). OPs: stat (statx: link
#   count, ctime, nanoseconds, 64-bit times), chown UID GID, mknod MODE
#   (FIFOs and sockets: a socket is bound at the path), utimens AS ANS MS
#   MNS [MODE] (the mode first, when given), truncate SIZE, create EXCL
#   TRUNC MODE CHMOD AS ANS MS MNS UID GID DATA (a small file made,
#   written and closed in one request; answered with stat's fields;
#   pcreate: the same, sent to the owners' agent); pchown is
#   chown sent to the owners' agent, pchmod MODE (the name itself, never a
#   symlink's target) sent there too (a third argument "files": file
#   operations only, in a bubblewrap of its own with CAP_CHOWN). There
#   only, "as UID GID GROUPS OP PATH ARGS" makes a directory operation with
#   root/'s caller's ids (as_caller, below): mkdir MODE, mknod MODE RDEV
#   (files, FIFOs, sockets, device nodes), mkfile (a new file, then the
#   agent's own uid's), symlink TARGET, link NEWPATH, unlink, rmdir, rename
#   NEWPATH FLAGS, truncate SIZE, utimens AS ANS MS MNS, chmod MODE, open
#   FLAGS MODE; those that make a name answer with its stat. The sandbox's
#   agent makes mkdir, mknod, symlink, link, unlink, rmdir, rename, chmod
#   and open without "as", as itself (the SSH login, what root/'s SFTP
#   server would make: for paths SFTP cannot carry, PATH_MAX and beyond);
#   both answer readlink (the target) and list (every name with its stat).
#   open keeps the file open and answers with a handle after its stat;
#   hread H OFF LEN, hwrite H OFF DATA, htrunc H SIZE, hstat H, hsync H and
#   hclose H then act on that descriptor (handle_op, below). Owners are
#   the sandbox's ids, 0 to 65535 (EINVAL beyond, as on the local provider). PATH is resolved from "/" one name at a time by
#   descriptor (openat with O_NOFOLLOW), so no symlink is followed in any
#   component: a directory the sandbox swaps for a symlink fails the
#   operation instead of redirecting it; the last name is acted on with
#   the *at call's no-follow flag. The system calls' numbers on this
#   machine come as the second argument ("name=nr,..."; seerfs knows them
#   from `uname -m`); without them every F gets ENOSYS.
#
# The spec is NUL-separated: cwd, the number of environment entries, the
# entries (KEY=VALUE), then argv. When its stdin ends (seerfs stops the
# sandbox, or the link dies) the agent kills every process of the sandbox
# and exits, and bubblewrap's pid namespace ends with it. It never blocks:
# every descriptor but stdin is non-blocking and buffered, and the
# commands' output is not read while too much waits for seerfs.
#
# Out of the sandbox's reach: bubblewrap starts it as its pid namespace's
# init (--as-pid-1), and the kernel drops every signal that a process of
# the namespace sends to its init unless init handles it: SIGKILL and
# SIGSTOP always, and all the others but SIGCHLD (its one handler, which
# only wakes the loop). It makes itself not dumpable, so that the
# sandbox's processes (the same user, without CAP_SYS_PTRACE) can neither
# ptrace it nor read its memory, environment or descriptors through
# /proc/1. Its one argument is prctl's system call number on this machine
# (seerfs knows it from `uname -m`); without it, or when the call fails, a
# line "@@seer-agent-warn WHY" before the ready line says so, and it runs on.
use strict;
use POSIX qw(setsid WNOHANG EAGAIN EINTR EPIPE ENOENT);
use Fcntl qw(F_GETFL F_SETFL O_NONBLOCK);
use Socket ();

use constant LIM   => 1 << 20;   # output waiting for seerfs above which the commands' pipes are not read
use constant GRACE => 0.5;       # output read after the command's exit, as core/jobs.c does locally
use constant CHUNK => 65536;

$0 = 'seerfs-agent';
$SIG{PIPE} = 'IGNORE';

# PR_SET_DUMPABLE (4) to 0, checked with PR_GET_DUMPABLE (3).
sub nodump {
	my $nr = shift;
	return 'no prctl system call number for this machine: it stays dumpable (ptrace-able by the sandbox)'
		unless defined $nr && $nr =~ /^\d+$/;
	$nr += 0;
	return "prctl(PR_SET_DUMPABLE, 0) failed: $!: it stays dumpable (ptrace-able by the sandbox)"
		if syscall($nr, 4, 0, 0, 0, 0) == -1;
	my $d = syscall($nr, 3, 0, 0, 0, 0);
	return "still dumpable ($d) after prctl(PR_SET_DUMPABLE, 0)" if $d != 0;
	return '';
}
my $nodump = nodump($ARGV[0]);
my %nr = map { split /=/, $_, 2 } grep { /^\w+=\d+$/ } split /,/, ($ARGV[1] // '');
# "files": the owners' agent of root/ (core/providers/ssh/run.c: fagent_acquire),
# in a bubblewrap of its own with CAP_CHOWN: file operations only, never a
# command or a signal.
my $files_only = ($ARGV[2] // '') eq 'files';

sub nonblock { my $fh = shift; my $f = fcntl($fh, F_GETFL, 0); fcntl($fh, F_SETFL, $f | O_NONBLOCK) if defined $f }
# perl-base (what a minimal Debian has) lacks Time::HiRes: whole seconds then.
my $hires = eval { require Time::HiRes; 1 };
sub now { $hires ? Time::HiRes::time() : time }

my $out = '';    # frames for seerfs
sub frame { $out .= pack('aNN', $_[0], $_[1], length $_[2]) . $_[2] }

pipe(my $wake_r, my $wake_w) or die "seerfs-agent: pipe: $!\n";
nonblock($_) for ($wake_r, $wake_w, \*STDOUT);
$SIG{CHLD} = sub { syswrite($wake_w, 'x') };
syswrite(STDOUT, "\@\@seer-agent-warn $nodump\n") if length $nodump;
syswrite(STDOUT, "\@\@seer-agent-ready\n");

# id => {id, pid, in_fh, in_buf, in_eof, out_fh, err_fh, exited, status, t_exit, t_act}
my %jobs;
my %bypid;

# ---- processes -------------------------------------------------------------
# Every process: [pid, ppid, session, state].
sub procs {
	my @p;
	opendir(my $d, '/proc') or return ();
	for my $n (readdir $d) {
		next unless $n =~ /^\d+$/ && $n > 1;
		open(my $f, '<', "/proc/$n/stat") or next;
		my $l = <$f>;
		next unless defined $l;
		my $r = rindex($l, ')');
		next if $r < 0;
		my @f = split ' ', substr($l, $r + 2);
		push @p, [$n, $f[1], $f[4], $f[0]];
	}
	return @p;
}

# Signals a job's tree: its session (which daemons that setsid leave) and
# every descendant still linked to it, as core/providers/local/agent.c does locally. For
# SIGKILL the tree is stopped first, so that nothing forks while it is
# collected, and collected again until nothing of it is left.
sub signal_tree {
	my ($root, $sig) = @_;
	my $total = 0;
	for my $round (1 .. 20) {
		my @p = procs();
		my %in;
		my $changed = 1;
		while ($changed) {
			$changed = 0;
			for my $e (@p) {
				next if $in{$e->[0]} || $e->[0] == $$;
				if ($e->[0] == $root || $e->[2] == $root || $in{$e->[1]}) {
					$in{$e->[0]} = 1;
					$changed = 1;
				}
			}
		}
		my @m = grep { $in{$_->[0]} && $_->[3] ne 'Z' } @p;
		last unless @m;
		kill 'STOP', map { $_->[0] } @m if $sig == 9;
		for my $e (@m) { $total++ if kill $sig, $e->[0] }
		last if $sig != 9;
		select(undef, undef, undef, 0.002);
	}
	return $total;
}

# Every process of the sandbox. kill(-1) reaches every process the agent
# may signal, which is the sandbox only inside bubblewrap's pid namespace,
# where the agent is that namespace's init (pid 1; or pid 2 under
# bubblewrap's own init). Anywhere else (a test run by hand) only the trees
# of its commands.
sub kill_all {
	if ($$ == 1 || getppid() == 1 && $$ == 2) {
		kill 'KILL', -1;
		return;
	}
	signal_tree($_->{pid}, 9) for values %jobs;
}

# ---- jobs ------------------------------------------------------------------
sub refuse {
	my ($id, $why) = @_;
	frame('E', $id, "seerfs: $why\n");
	frame('X', $id, pack('N', 126 << 8));
}

sub spawn {
	my ($id, $spec) = @_;
	return refuse($id, "job id $id is in use") if $jobs{$id};
	my @f = split /\0/, $spec, -1;
	my $cwd = shift @f;
	my $nenv = shift @f;
	my @env = splice(@f, 0, $nenv);
	my @argv = @f;
	return refuse($id, "empty command") unless @argv;
	my ($ir, $iw, $or, $ow, $er, $ew);
	pipe($ir, $iw) && pipe($or, $ow) && pipe($er, $ew) or return refuse($id, "cannot make the command's pipes: $!");
	my $pid = fork;
	return refuse($id, "cannot fork: $!") unless defined $pid;
	if (!$pid) {
		# The command: a session of its own (kill 0 and tree kills stay
		# inside it), the default dispositions (exec resets the handled
		# ones, not an ignored SIGPIPE), the pipes as 0, 1, 2 (every
		# other descriptor of the agent is close-on-exec).
		setsid();
		$SIG{PIPE} = 'DEFAULT';
		$SIG{CHLD} = 'DEFAULT';
		open(STDIN, '<&', $ir);
		open(STDOUT, '>&', $ow);
		open(STDERR, '>&', $ew);
		chdir $cwd or do { print STDERR "seerfs: cd $cwd: $!\n"; POSIX::_exit(126) };
		for my $kv (@env) {
			my ($k, $v) = split /=/, $kv, 2;
			$ENV{$k} = $v if defined $v && length $k;
		}
		exec { $argv[0] } @argv;
		my $e = $! + 0;
		print STDERR "$argv[0]: $!\n";
		POSIX::_exit($e == ENOENT ? 127 : 126);
	}
	close $ir;
	close $ow;
	close $ew;
	nonblock($_) for ($iw, $or, $er);
	my $j = {id => $id, pid => $pid, in_fh => $iw, in_buf => '', out_fh => $or, err_fh => $er, t_act => now()};
	$jobs{$id} = $j;
	$bypid{$pid} = $j;
	frame('P', $id, $pid);
}

# Reads what a job's pipe holds; with all, until it is empty.
sub job_read {
	my ($j, $k, $type, $all) = @_;
	while ($j->{$k}) {
		my $n = sysread($j->{$k}, my $buf, CHUNK);
		if (!defined $n) {
			next if $! == EINTR;
			return if $! == EAGAIN;
		}
		if (!$n) {
			close $j->{$k};
			$j->{$k} = undef;
			return;
		}
		$j->{t_act} = now();
		frame($type, $j->{id}, $buf);
		return unless $all;
	}
}

sub stdin_close {
	my $j = shift;
	frame('A', $j->{id}, pack('N', length $j->{in_buf})) if length $j->{in_buf};
	$j->{in_buf} = '';
	close $j->{in_fh} if $j->{in_fh};
	$j->{in_fh} = undef;
}

# The job's end: what is left in its pipes, then the status.
sub job_finish {
	my $j = shift;
	job_read($j, 'out_fh', 'O', 1);
	job_read($j, 'err_fh', 'E', 1);
	close $j->{out_fh} if $j->{out_fh};
	close $j->{err_fh} if $j->{err_fh};
	stdin_close($j);
	frame('X', $j->{id}, pack('N', $j->{status}));
	delete $jobs{$j->{id}};
}

sub frames {
	my $in = shift;
	while (length($$in) >= 9) {
		my ($t, $id, $len) = unpack('aNN', $$in);
		last if length($$in) < 9 + $len;
		my $d = substr($$in, 9, $len);
		substr($$in, 0, 9 + $len) = '';
		my $j = $jobs{$id};
		if ($t eq 'S' && $files_only) {
			refuse($id, "this agent makes file operations only");
		} elsif ($t eq 'K' && $files_only) {
			frame('R', $id, 0);
		} elsif ($t eq 'S') {
			spawn($id, $d);
		} elsif ($t eq 'I') {
			if ($j && $j->{in_fh}) {
				$j->{in_buf} .= $d;
			} else {
				frame('A', $id, pack('N', length $d));   # nobody reads it: taken all the same
			}
		} elsif ($t eq 'C') {
			$j->{in_eof} = 1 if $j;
		} elsif ($t eq 'K') {
			my ($pid, $sig, $tree) = split ' ', $d;
			my $n = 0;
			if ($pid > 1 && $sig >= 0 && $sig <= 64) {
				$n = $tree ? signal_tree($pid, $sig) : (kill($sig, $pid) ? 1 : 0);
			}
			frame('R', $id, $n);
		} elsif ($t eq 'F') {
			# A mistake in one must never end the agent (and the sandbox).
			my $r = eval { fileop_req($d) };
			frame('f', $id, defined $r ? $r : POSIX::EIO());
		}
	}
}

# ---- file operations for root/ ----------------------------------------------
use constant {
	AT_FDCWD => -100, AT_SYMLINK_NOFOLLOW => 0x100, O_PATH_ => 010000000, O_CLOEXEC_ => 02000000,
	STATX_BASIC => 0x7ff, S_IFIFO_ => 0010000, S_IFSOCK_ => 0140000, S_IFREG_ => 0100000,
	S_IFCHR_ => 0020000, S_IFBLK_ => 0060000, AT_REMOVEDIR => 0x200, AT_EMPTY_PATH => 0x1000,
	S_IFDIR_ => 0040000, O_NONBLOCK_ => 04000, FH_MAX => 256, XFER_MAX => 1 << 20, LIST_MAX => 8 << 20,
};

sub sc { my $n = shift; return defined $n ? syscall($n + 0, @_) : do { $! = POSIX::ENOSYS(); -1 } }

# The directory that holds PATH's last name, opened by descriptor from "/"
# one name at a time, never following a symlink: (fd, name) or (-errno).
sub walk {
	my $path = shift;
	return (-POSIX::EINVAL()) unless substr($path, 0, 1) eq '/';
	my @c = grep { length } split m{/}, $path;
	my $last = @c ? pop @c : '.';
	return (-POSIX::EINVAL()) if $last eq '..';
	my $root = '/';   # syscall takes a string it may write: not a constant
	my $fd = sc($nr{openat}, AT_FDCWD, $root, O_PATH_ | Fcntl::O_DIRECTORY() | O_CLOEXEC_, 0);
	return (-($! + 0)) if $fd < 0;
	for my $c (@c) {
		if ($c eq '..') {   # root/'s paths never hold one
			POSIX::close($fd);
			return (-POSIX::EINVAL());
		}
		my $n = sc($nr{openat}, $fd + 0, $c, O_PATH_ | Fcntl::O_DIRECTORY() | Fcntl::O_NOFOLLOW() | O_CLOEXEC_, 0);
		my $e = $! + 0;
		POSIX::close($fd);
		return (-$e) if $n < 0;
		$fd = $n;
	}
	return ($fd, $last);
}

# statx of NAME in directory FD without following it; FD itself when NAME
# is undefined.
sub fop_stat {
	my ($fd, $name) = @_;
	my $buf = "\0" x 256;
	my $fl = AT_SYMLINK_NOFOLLOW;
	if (!defined $name) {
		$name = '';   # syscall may write a string: not a constant
		$fl |= AT_EMPTY_PATH;
	}
	return -($! + 0) if sc($nr{statx}, $fd + 0, $name, $fl, STATX_BASIC, $buf) < 0;
	my ($mask, $blksize, undef, $nlink, $uid, $gid, $mode, undef, $ino, $size, $blocks) = unpack('L L Q L L L S S Q Q Q', $buf);
	my ($as, $ans) = unpack('q L', substr($buf, 64, 12));
	my ($cs, $cns) = unpack('q L', substr($buf, 96, 12));
	my ($ms, $mns) = unpack('q L', substr($buf, 112, 12));
	my ($rmaj, $rmin) = unpack('L L', substr($buf, 128, 8));
	return join("\0", 0, $nlink, $uid, $gid, $mode, $size, $blocks, $as, $ans, $ms, $mns, $cs, $cns, $ino, $rmaj, $rmin);
}

# ---- operations as root/'s caller (the owners' agent only) -----------------
# "as UID GID GROUPS OP PATH ARGS...": OP made with the FUSE caller's
# credentials, as the local provider's kernel would check them: fsuid,
# fsgid and the supplementary groups (GROUPS: comma-separated) are the
# caller's for this one operation (its walk included), then the agent's
# again. A fsuid other than 0 takes CAP_CHOWN, CAP_DAC_OVERRIDE,
# CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID and CAP_MKNOD out of the
# effective set (capabilities(7)), so such a caller gets its own rights and
# no more: search and write permission, the sticky bit, EACCES and EPERM
# come from the host's kernel. Only root (uid 0, host root through a root
# seerfs) acts with the agent's capabilities. Ids are the sandbox's, 0 to
# 65535; anything else is EINVAL. Should the agent fail to get its own
# credentials back, it exits (seerfs starts a new one) rather than act on.
my %caller_op = map { $_ => 1 } qw(mkdir mknod mkfile symlink link unlink rmdir rename truncate utimens chmod open
	hread hwrite htrunc hstat hsync hclose);
# mkfile only "as" (it gives the file to the agent's own uid); the others
# the sandbox's agent also makes as itself, the SSH login, what root/'s
# SFTP server would (paths SFTP cannot carry: PATH_MAX and beyond); the
# owners' agent never without "as" (fileop).
my %only_as = map { $_ => 1 } qw(mkfile);
my ($own_fsuid, $own_fsgid, @own_groups);
our $acting = 0;   # within as_caller
our @as_ids;       # within as_caller: the ids it acts with (uid, gid, groups)

# ---- open files ---------------------------------------------------------------
# "open PATH FLAGS MODE" (the owners' agent: "as ... open", with the
# caller's ids) keeps the file open here and answers with its stat and a
# handle; "hread H OFF LEN", "hwrite H OFF DATA", "htrunc H SIZE",
# "hstat H", "hsync H", "hclose H" then act on that descriptor, never on
# a path again. A handle opened "as" a caller is used only "as" the same
# uid and gid, and acts with the ids it was opened with (a write as that
# caller clears set-id bits as the kernel would); one opened without "as"
# only without. At most FH_MAX at once (EMFILE); they end with the agent
# (its stdin's end: seerfs let go, or the link died). A handle names one
# agent's file only: a random prefix per agent, so that a handle of an
# agent that ended never names a file of the next.
my %fh;   # handle => [fd, uid, gid, [groups]] (uid undef: opened without "as")
my $fh_seq = 0;
my $fh_salt = do {
	my $s = '';
	if (open(my $u, '<', '/dev/urandom')) {
		sysread($u, $s, 8);
		close $u;
	}
	length($s) == 8 ? unpack('H16', $s) : sprintf('%x%x', time, $$);
};
my %hop = map { $_ => 1 } qw(hread hwrite htrunc hstat hsync hclose);

sub uint_ok { my $v = shift; return defined $v && $v =~ /^\d{1,18}$/ }

sub handle_op {
	my ($op, $id, @a) = @_;
	my $h = $fh{$id // ''};
	return POSIX::EBADF() unless $h && (defined($h->[1]) ? $acting : !$acting);
	my $fd = $h->[0];
	if ($op eq 'hclose') {
		delete $fh{$id};
		return defined POSIX::close($fd) ? 0 : $! + 0;
	}
	if ($op eq 'hstat') {
		my $r = fop_stat($fd, undef);
		return $r =~ /^-\d+$/ ? -$r : $r;
	}
	if ($op eq 'hread') {
		my ($off, $len) = @a;
		return POSIX::EINVAL() unless uint_ok($off) && uint_ok($len) && $len <= XFER_MAX;
		my $buf = "\0" x ($len + 1);
		my $k = sc($nr{pread64}, $fd + 0, $buf, $len + 0, $off + 0);
		return $! + 0 if $k < 0;
		return "0\0" . substr($buf, 0, $k);
	}
	if ($op eq 'hwrite') {
		my $off = shift @a;
		return POSIX::EINVAL() unless uint_ok($off);
		my $data = join("\0", @a);   # the rest of the request, NULs and all
		my $done = 0;
		while ($done < length $data) {
			my $chunk = substr($data, $done);
			my $k = sc($nr{pwrite64}, $fd + 0, $chunk, length($chunk), $off + $done);
			if ($k < 0) {
				next if $! == EINTR;
				return $done ? "0\0$done" : $! + 0;
			}
			last if $k == 0;
			$done += $k;
		}
		return "0\0$done";
	}
	if ($op eq 'htrunc') {
		return POSIX::EINVAL() unless uint_ok($a[0]);
		return sc($nr{ftruncate}, $fd + 0, $a[0] + 0) < 0 ? $! + 0 : 0;
	}
	if ($op eq 'hsync') {
		return sc($nr{fsync}, $fd + 0) < 0 ? $! + 0 : 0;
	}
	return POSIX::ENOSYS();
}
my $made_fd;       # mkfile's new file
sub id_ok { my $v = shift; return defined $v && $v =~ /^\d{1,5}$/ && $v <= 65535 }

sub set_ids {
	my ($uid, $gid, @g) = @_;
	my $gl = pack('L*', @g);
	return -($! + 0) if sc($nr{setgroups32} // $nr{setgroups}, scalar(@g), @g ? $gl : 0) < 0;
	sc($nr{setfsgid32} // $nr{setfsgid}, $gid + 0);
	return -POSIX::EPERM() if sc($nr{setfsgid32} // $nr{setfsgid}, -1) != $gid;
	sc($nr{setfsuid32} // $nr{setfsuid}, $uid + 0);
	return -POSIX::EPERM() if sc($nr{setfsuid32} // $nr{setfsuid}, -1) != $uid;
	return 0;
}

sub as_caller {
	my ($uid, $gid, $groups, @rest) = @_;
	return POSIX::ENOSYS() unless $files_only && defined($nr{setfsuid} // $nr{setfsuid32}) && defined($nr{setgroups} // $nr{setgroups32});
	my @g = grep { length } split /,/, ($groups // ''), -1;
	return POSIX::EINVAL() if grep { !id_ok($_) } ($uid, $gid, @g);
	return POSIX::EINVAL() if @g > 1024 || !@rest || !$caller_op{$rest[0]};
	if ($hop{$rest[0]}) {
		# a handle's operation: only as the uid and gid that opened
		# it, and with the ids it was opened with
		my $h = $fh{$rest[1] // ''};
		return POSIX::EBADF() unless $h && defined $h->[1] && $h->[1] == $uid && $h->[2] == $gid;
		@g = @{$h->[3]};
	}
	unless (defined $own_fsuid) {
		$own_fsuid = sc($nr{setfsuid32} // $nr{setfsuid}, -1);
		$own_fsgid = sc($nr{setfsgid32} // $nr{setfsgid}, -1);
		my @l = split ' ', $(;
		shift @l;
		my %seen;
		@own_groups = grep { !$seen{$_}++ } @l;
	}
	my $old = umask(0);   # the mode as the kernel gave it to root/ (the caller's umask applied)
	my $r = set_ids($uid, $gid, @g);
	if ($r == 0) {
		local $acting = 1;
		local @as_ids = ($uid + 0, $gid + 0, @g);
		$r = eval { fileop(@rest) };
		$r = POSIX::EIO() unless defined $r;
	} else {
		$r = -$r;
	}
	umask($old);
	if (set_ids($own_fsuid, $own_fsgid, @own_groups) != 0) {
		syswrite(STDOUT, $out) if length $out;
		POSIX::_exit(1);
	}
	if (defined $made_fd) {
		# mkfile: the file this call made (by its descriptor, never
		# by name) becomes the login's, so that root/'s SFTP server
		# may open it; root/ then gives it to the caller (pchown).
		my ($f, $empty) = ($made_fd, '');   # syscall may write a string: not a constant
		$made_fd = undef;
		$r = -($! + 0) if sc($nr{fchownat}, $f + 0, $empty, $own_fsuid + 0, -1, AT_EMPTY_PATH) < 0 && $r eq '0';
		POSIX::close($f);
	}
	return $r;
}

# Where a caller's operation made NAME in directory FD: 0 and its stat.
sub made { my ($r, $fd, $name) = @_; return $r ? $r : fop_stat($fd, $name) }

# One operation: its reply's text.
sub fileop_req { my @a = split /\0/, shift, -1; return ($a[0] // '') eq 'as' ? as_caller(@a[1 .. $#a]) : fileop(@a) }

sub fileop {
	my @a = @_;
	my ($op, $path) = (shift @a, shift @a);
	return POSIX::EINVAL() unless defined $path;
	# The owners' agent (it holds capabilities) makes owners and modes
	# by itself, everything else only as a caller (as_caller).
	# pcreate: root's deferred create given to root (fs/root/sftpfs.c:
	# dc_try_create sends no other); any other owner goes "as" the caller.
	return POSIX::ENOSYS() if $files_only && !$acting && $op ne 'pchown' && $op ne 'pchmod' && $op ne 'stat' &&
		!($op eq 'pcreate' && ($a[8] // '') =~ /^(0|-1)$/);
	return POSIX::ENOSYS() if $only_as{$op} && !$acting;
	return handle_op($op, $path, @a) if $hop{$op};
	my ($fd, $name) = walk($path);
	return -$fd if $fd < 0;
	my $r = 0;
	if ($op eq 'stat') {
		$r = fop_stat($fd, $name);
	} elsif ($op eq 'chown' || $op eq 'pchown') {
		# the sandbox's ids only, as the local provider maps them
		if (grep { !/^-?\d+$/ || ($_ != -1 && ($_ < 0 || $_ > 65535)) } @a[0, 1]) {
			$r = -POSIX::EINVAL();
		} elsif (sc($nr{fchownat}, $fd + 0, $name, $a[0] + 0, $a[1] + 0, AT_SYMLINK_NOFOLLOW) < 0) {
			$r = -($! + 0);
		}
	} elsif ($op eq 'pchmod' || $op eq 'chmod') {
		# chmod of the name itself (a symlink: EOPNOTSUPP, as lchmod),
		# by an O_PATH descriptor through /proc; with CAP_FOWNER and
		# CAP_FSETID in the owners' agent, what the kernel let the
		# caller do through root/.
		my $f = sc($nr{openat}, $fd + 0, $name, O_PATH_ | Fcntl::O_NOFOLLOW() | O_CLOEXEC_, 0);
		if ($f < 0) {
			$r = -($! + 0);
		} else {
			my $via = "/proc/self/fd/$f";
			$r = -($! + 0) if sc($nr{fchmodat}, AT_FDCWD, $via, ($a[0] // 0) & 07777, 0) < 0;
			POSIX::close($f);
		}
	} elsif ($op eq 'mknod') {
		my $mode = $a[0] + 0;
		my $old = umask(0);
		if (($mode & 0170000) == S_IFSOCK_) {
			# bind makes the socket with 0777 less the umask; it takes
			# a name relative to the current directory (108 bytes).
			umask(~$mode & 0777);
			if (length($name) > 107) {
				$r = -POSIX::ENAMETOOLONG();
			} elsif (sc($nr{fchdir}, $fd + 0) < 0) {
				$r = -($! + 0);
			} else {
				if (!socket(my $s, Socket::AF_UNIX(), Socket::SOCK_STREAM(), 0)) {
					$r = -($! + 0);
				} else {
					$r = -($! + 0) unless bind($s, Socket::pack_sockaddr_un($name));
					$r = -POSIX::EEXIST() if $r == -POSIX::EADDRINUSE();
					close $s;
				}
				chdir '/';
			}
		} elsif (($mode & 0170000) == S_IFIFO_ || ($mode & 0170000) == S_IFREG_) {
			$r = -($! + 0) if sc($nr{mknodat}, $fd + 0, $name, $mode, 0) < 0;
		} elsif ($acting && (($mode & 0170000) == S_IFCHR_ || ($mode & 0170000) == S_IFBLK_)) {
			# device nodes: a caller's, with CAP_MKNOD where it is root
			my $dev = $a[1] // 0;
			$r = $dev =~ /^\d+$/ && $dev <= 0xffffffff ? (sc($nr{mknodat}, $fd + 0, $name, $mode, $dev + 0) < 0 ? -($! + 0) : 0) : -POSIX::EINVAL();
		} else {
			$r = -POSIX::EPERM();   # device nodes: no CAP_MKNOD here
		}
		umask($old);
		$r = made($r, $fd, $name) if $acting;
	} elsif ($op eq 'mkfile') {
		# a new, empty file (O_EXCL, never through a symlink), 0600
		# until root/ gives it its mode
		my $f = sc($nr{openat}, $fd + 0, $name, Fcntl::O_WRONLY() | Fcntl::O_CREAT() | Fcntl::O_EXCL() | Fcntl::O_NOFOLLOW() | O_CLOEXEC_, 0600);
		if ($f < 0) {
			$r = -($! + 0);
		} else {
			$made_fd = $f;
		}
	} elsif ($op eq 'mkdir') {
		my $old = umask(0);   # the mode as the kernel gave it to root/
		$r = made(sc($nr{mkdirat}, $fd + 0, $name, ($a[0] // 0) & 07777) < 0 ? -($! + 0) : 0, $fd, $name);
		umask($old);
	} elsif ($op eq 'open') {
		# open FLAGS MODE: a regular file kept open (handle_op); FLAGS
		# are open(2)'s access mode, O_CREAT, O_EXCL, O_TRUNC and
		# O_APPEND, never through a symlink (O_NOFOLLOW), and never
		# blocking on a FIFO swapped in (O_NONBLOCK, then refused)
		my ($fl, $mode) = @a;
		my $keep = Fcntl::O_ACCMODE() | Fcntl::O_CREAT() | Fcntl::O_EXCL() | Fcntl::O_TRUNC() | Fcntl::O_APPEND();
		if (!uint_ok($fl) || !uint_ok($mode // 0)) {
			$r = -POSIX::EINVAL();
		} elsif (keys(%fh) >= FH_MAX) {
			$r = -POSIX::EMFILE();
		} else {
			my $old = umask(0);
			my $f = sc($nr{openat}, $fd + 0, $name, ($fl & $keep) | Fcntl::O_NOFOLLOW() | O_CLOEXEC_ | O_NONBLOCK_,
				   ($mode // 0) & 07777);
			umask($old);
			if ($f < 0) {
				$r = -($! + 0);
			} else {
				my $st = fop_stat($f, undef);
				my $type = $st =~ /^-/ ? 0 : (split /\0/, $st)[4] & 0170000;
				if ($type == S_IFREG_) {
					my $id = sprintf('%s.%d', $fh_salt, ++$fh_seq);
					$fh{$id} = $acting ? [$f, @as_ids[0, 1], [@as_ids[2 .. $#as_ids]]] : [$f];
					$r = "$st\0$id";
				} else {
					POSIX::close($f);
					$r = $st =~ /^-/ ? $st : $type == S_IFDIR_ ? -POSIX::EISDIR() : -POSIX::ENXIO();
				}
			}
		}
	} elsif ($op eq 'readlink') {
		my $buf = "\0" x 4097;
		my $k = sc($nr{readlinkat}, $fd + 0, $name, $buf, 4096);
		$r = $k < 0 ? -($! + 0) : "0\0" . substr($buf, 0, $k);
	} elsif ($op eq 'list') {
		# a directory's names with their stat, opened by descriptor
		# (never a symlink) and read through that descriptor:
		# "0 N NAME STAT... NAME STAT..." (stat's 15 fields each)
		my $d = sc($nr{openat}, $fd + 0, $name, Fcntl::O_RDONLY() | Fcntl::O_DIRECTORY() | Fcntl::O_NOFOLLOW() | O_CLOEXEC_, 0);
		if ($d < 0) {
			$r = -($! + 0);
		} elsif (!opendir(my $dh, "/proc/self/fd/$d")) {
			$r = -($! + 0);
			POSIX::close($d);
		} else {
			my ($n, $out, $len) = (0, '', 0);
			while (defined(my $e = readdir $dh)) {
				next if $e eq '.' || $e eq '..';
				my $st = fop_stat($d, $e);
				next if $st =~ /^-/;   # gone meanwhile
				$st =~ s/^0\0//;
				$out .= "\0$e\0$st";
				$n++;
				if (length($out) > LIST_MAX) {
					$r = -POSIX::E2BIG();
					last;
				}
			}
			closedir $dh;
			POSIX::close($d);
			$r = "0\0$n$out" unless $r;
		}
	} elsif ($op eq 'symlink') {
		my $t = $a[0] // '';
		$r = made(sc($nr{symlinkat}, $t, $fd + 0, $name) < 0 ? -($! + 0) : 0, $fd, $name);
	} elsif ($op eq 'unlink' || $op eq 'rmdir') {
		$r = -($! + 0) if sc($nr{unlinkat}, $fd + 0, $name, $op eq 'rmdir' ? AT_REMOVEDIR : 0) < 0;
	} elsif ($op eq 'link' || $op eq 'rename') {
		# the second path walked as the first, by descriptor from "/"
		my ($fd2, $name2) = walk($a[0] // '');
		if ($fd2 < 0) {
			$r = $fd2;
		} elsif ($op eq 'link') {
			$r = made(sc($nr{linkat}, $fd + 0, $name, $fd2 + 0, $name2, 0) < 0 ? -($! + 0) : 0, $fd2, $name2);
		} else {
			my $fl = $a[1] // 0;
			$r = $fl =~ /^\d+$/ ? (sc($nr{renameat2}, $fd + 0, $name, $fd2 + 0, $name2, $fl + 0) < 0 ? -($! + 0) : 0) : -POSIX::EINVAL();
		}
		POSIX::close($fd2) if $fd2 >= 0;
	} elsif ($op eq 'utimens') {
		if (defined $a[4] && length $a[4]) {
			# The mode first, on the name itself: an O_PATH descriptor
			# of it (never a symlink's target) through /proc.
			my $f = sc($nr{openat}, $fd + 0, $name, O_PATH_ | Fcntl::O_NOFOLLOW() | O_CLOEXEC_, 0);
			if ($f < 0) {
				$r = -($! + 0);
			} else {
				my $via = "/proc/self/fd/$f";
				$r = -($! + 0) if sc($nr{fchmodat}, AT_FDCWD, $via, $a[4] + 0, 0) < 0;
				POSIX::close($f);
			}
		}
		my $ts = pack('q q q q', map { $_ + 0 } @a[0 .. 3]);
		$r = -($! + 0) if !$r && sc($nr{utimensat_time64} // $nr{utimensat}, $fd + 0, $name, $ts, AT_SYMLINK_NOFOLLOW) < 0;
	} elsif ($op eq 'truncate') {
		my $f = sc($nr{openat}, $fd + 0, $name, Fcntl::O_WRONLY() | Fcntl::O_NOFOLLOW() | O_CLOEXEC_, 0);
		if ($f < 0) {
			$r = -($! + 0);
		} else {
			$r = -($! + 0) if sc($nr{ftruncate}, $f + 0, $a[0] + 0) < 0;
			POSIX::close($f);
		}
	} elsif ($op eq 'create' || $op eq 'pcreate') {
		# create EXCL TRUNC MODE CHMOD AS ANS MS MNS UID GID DATA: a small
		# file made whole in one request (fs/root/sftpfs.c: deferred
		# create): opened with O_NOFOLLOW (a symlink planted at the name
		# fails it, EEXIST or ELOOP), O_EXCL first (the mode then exact,
		# umask 0), without it only when EXCL is 0 and the name exists
		# (open(2)'s rules: its mode stays); DATA written from offset 0;
		# then the owner (UID GID, -1: none; the sandbox's ids only; a
		# refusal leaves it: its errno follows stat's fields in the
		# answer), CHMOD (-1: none) and the times (AS -1: none) on the
		# descriptor; the answer is stat's.
		# DATA is the rest of the request, NULs and all. pcreate is
		# create sent to the owners' agent (an owner given: CAP_CHOWN).
		my ($excl, $trunc, $mode, $chmod, @t) = splice(@a, 0, 8);
		my ($uid, $gid) = splice(@a, 0, 2);
		my $cherr = 0;
		my $data = join("\0", @a);
		my $fl = Fcntl::O_WRONLY() | Fcntl::O_CREAT() | Fcntl::O_NOFOLLOW() | O_CLOEXEC_ | ($trunc ? Fcntl::O_TRUNC() : 0);
		my $old = umask(0);
		my $f = sc($nr{openat}, $fd + 0, $name, $fl | Fcntl::O_EXCL(), ($mode // 0) & 07777);
		$f = sc($nr{openat}, $fd + 0, $name, $fl, 0) if $f < 0 && $! == POSIX::EEXIST() && !$excl;
		$r = -($! + 0) if $f < 0;
		umask($old);
		my $via = "/proc/self/fd/$f";
		for (my $off = 0; !$r && $off < length $data;) {
			my $k = POSIX::write($f, substr($data, $off), length($data) - $off);
			if (!defined $k) {
				$r = -($! + 0) unless $! == EINTR;
			} else {
				$off += $k;
			}
		}
		if (!$r && grep({ defined($_) && /^\d+$/ && $_ <= 65535 } $uid, $gid)) {
			my @ids = map { defined($_) && /^\d+$/ && $_ <= 65535 ? $_ + 0 : -1 } $uid, $gid;
			my $empty = '';   # syscall takes a string it may write: not a constant
			$cherr = $! + 0 if sc($nr{fchownat}, $f + 0, $empty, @ids, 0x1000) < 0;   # AT_EMPTY_PATH
		}
		$r = -($! + 0) if !$r && defined $chmod && $chmod >= 0 && sc($nr{fchmodat}, AT_FDCWD, $via, $chmod & 07777, 0) < 0;
		if (!$r && defined $t[0] && $t[0] >= 0) {
			my $ts = pack('q q q q', map { $_ + 0 } @t[0 .. 3]);
			$r = -($! + 0) if sc($nr{utimensat_time64} // $nr{utimensat}, AT_FDCWD, $via, $ts, 0) < 0;
		}
		unless ($r) {   # stat's fields, then the owner change's errno
			$r = fop_stat($fd, $name);
			$r .= "\0$cherr" unless $r =~ /^-?\d+$/;
		}
		# close's own errors (NFS) are the write's
		$r = -($! + 0) if $f >= 0 && !defined POSIX::close($f) && !($r =~ /^-\d+$/ && $r < 0);
	} else {
		$r = -POSIX::ENOSYS();
	}
	POSIX::close($fd);
	return $r =~ /^-?\d+$/ ? -$r : $r;
}

# ---- the loop ----------------------------------------------------------------
my $in = '';
for (;;) {
	my ($rin, $win) = ('', '');
	vec($rin, 0, 1) = 1;
	vec($rin, fileno($wake_r), 1) = 1;
	vec($win, 1, 1) = 1 if length $out;
	my $room = length($out) < LIM;
	my $t = now();
	my $timeout;
	for my $j (values %jobs) {
		for my $k ('out_fh', 'err_fh') {
			vec($rin, fileno($j->{$k}), 1) = 1 if $j->{$k} && $room;
		}
		vec($win, fileno($j->{in_fh}), 1) = 1 if $j->{in_fh} && length $j->{in_buf};
		if ($j->{exited} && $room) {
			my $at = ($j->{t_act} > $j->{t_exit} ? $j->{t_act} : $j->{t_exit}) + GRACE - $t;
			$timeout = $at if !defined $timeout || $at < $timeout;
		}
	}
	$timeout = 0 if defined $timeout && $timeout < 0;
	my ($rout, $wout) = ($rin, $win);
	if (select($rout, $wout, undef, $timeout) < 0) {
		next if $! == EINTR;
		die "seerfs-agent: select: $!\n";
	}
	if (vec($rout, fileno($wake_r), 1)) {
		1 while sysread($wake_r, my $x, 512);
	}
	while ((my $p = waitpid(-1, WNOHANG)) > 0) {
		my $j = delete $bypid{$p} or next;
		$j->{exited} = 1;
		$j->{status} = $?;
		$j->{t_exit} = now();
	}
	if (vec($rout, 0, 1)) {
		my $k = sysread(STDIN, $in, CHUNK, length $in);
		if (defined $k && $k == 0 || !defined $k && $! != EAGAIN && $! != EINTR) {
			# seerfs let go of the sandbox: nothing of it stays.
			kill_all();
			exit 0;
		}
		frames(\$in);
	}
	for my $j (values %jobs) {
		if ($j->{in_fh} && length($j->{in_buf}) && vec($wout, fileno($j->{in_fh}), 1)) {
			my $k = syswrite($j->{in_fh}, $j->{in_buf}, CHUNK);
			if (defined $k) {
				substr($j->{in_buf}, 0, $k) = '';
				frame('A', $j->{id}, pack('N', $k));
			} elsif ($! == EPIPE) {
				# The command closed its stdin: seerfs closes the
				# job's, so that its writer sees it too.
				stdin_close($j);
				frame('c', $j->{id}, '');
			}
		}
		stdin_close($j) if $j->{in_fh} && $j->{in_eof} && !length $j->{in_buf};
		job_read($j, 'out_fh', 'O') if $j->{out_fh} && vec($rout, fileno($j->{out_fh}), 1);
		job_read($j, 'err_fh', 'E') if $j->{err_fh} && vec($rout, fileno($j->{err_fh}), 1);
	}
	my $t2 = now();
	for my $j (values %jobs) {
		next unless $j->{exited};
		my $last = $j->{t_act} > $j->{t_exit} ? $j->{t_act} : $j->{t_exit};
		job_finish($j) if !$j->{out_fh} && !$j->{err_fh} || length($out) < LIM && $t2 >= $last + GRACE;
	}
	while (length $out) {
		my $k = syswrite(STDOUT, $out, 4 * CHUNK);
		if (!defined $k) {
			last if $! == EAGAIN || $! == EINTR;
			kill_all();   # seerfs is gone
			exit 0;
		}
		substr($out, 0, $k) = '';
	}
}
