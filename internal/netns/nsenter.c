// The constructor below runs before the Go runtime starts, while the process
// is still single-threaded: the only moment a Go program can join a mount
// namespace (setns(CLONE_NEWNS) fails with EINVAL once threads share fs
// state). It is modelled on runc's libcontainer/nsenter/nsexec.c.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KNIT_ENV "_KNIT_NSENTER"
// KNIT_ENV once joined: the same length, so renamed in place.
#define KNIT_ENV_DONE "_KNIT_NSENTED"
_Static_assert(sizeof(KNIT_ENV) == sizeof(KNIT_ENV_DONE), "renamed in place: the same length");
#define KNIT_MAX_JOINS 8

extern char **environ;

struct knit_join {
	const char *kind;
	const char *path;
	int flag;
	int fd;
};

static void knit_fail(const char *kind, const char *path, int err)
{
	fprintf(stderr, "knit: join %s namespace %s: %s\n", kind, path, strerror(err));
	_exit(125);
}

static int knit_flag(const char *kind)
{
	static const struct {
		const char *kind;
		int flag;
	} kinds[] = {
		// No "pid": a process that joined a PID namespace cannot start
		// threads, and the Go runtime would fail to start its first.
		{"ipc", CLONE_NEWIPC}, {"uts", CLONE_NEWUTS}, {"net", CLONE_NEWNET},
		{"mnt", CLONE_NEWNS}, {"cgroup", CLONE_NEWCGROUP},
	};
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (strcmp(kind, kinds[i].kind) == 0)
			return kinds[i].flag;
	return 0;
}

// knit_parse splits "kind:path,kind:path" in place; the path is everything
// after the first ':'.
static int knit_parse(char *spec, struct knit_join *joins)
{
	int n = 0;
	for (char *save = NULL, *tok = strtok_r(spec, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		char *colon = strchr(tok, ':');
		if (n == KNIT_MAX_JOINS)
			knit_fail(tok, "", E2BIG);
		if (!colon)
			knit_fail(tok, "", EINVAL);
		*colon = '\0';
		joins[n].kind = tok;
		joins[n].path = colon + 1;
		joins[n].flag = knit_flag(tok);
		if (joins[n].flag == 0 || joins[n].path[0] == '\0')
			knit_fail(joins[n].kind, joins[n].path, EINVAL);
		n++;
	}
	return n;
}

static void knit_setns(struct knit_join *j)
{
	if (setns(j->fd, j->flag) < 0)
		knit_fail(j->kind, j->path, errno);
	close(j->fd);
}

// knit_unblock empties the signal mask of a process that will become a
// container's command or start one (knit's _init and _exec, runner.InitArg
// and runner.ExecArg): a signal whoever ran knit had blocked (env
// --block-signal, a thread of a program that blocks some) would stay
// blocked in the command, as no container's is, since the Go runtime
// unblocks only the signals it must see (SIGTERM, SIGHUP, ...) and
// execve and its children keep the rest (SIGUSR1, SIGWINCH, SIGALRM:
// a server that reloads on SIGUSR1 would never see it). Done here,
// before the runtime reads the mask it starts with.
static void knit_unblock(int argc, char **argv)
{
	sigset_t none;

	if (argc < 2 || (strcmp(argv[1], "_init") != 0 && strcmp(argv[1], "_exec") != 0))
		return;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

// glibc calls constructors with main's arguments.
__attribute__((constructor)) static void knit_nsenter(int argc, char **argv, char **envp)
{
	struct knit_join joins[KNIT_MAX_JOINS];
	struct knit_join *mnt = NULL;
	const char *env = getenv(KNIT_ENV);
	char *spec;
	int n;

	(void)envp;
	knit_unblock(argc, argv);
	if (!env)
		return;
	spec = strdup(env);
	if (!spec)
		knit_fail("", env, ENOMEM);
	n = knit_parse(spec, joins);

	// Open every file before joining anything: a join (mnt above all)
	// changes what the later paths resolve to.
	for (int i = 0; i < n; i++) {
		joins[i].fd = open(joins[i].path, O_RDONLY | O_CLOEXEC);
		if (joins[i].fd < 0)
			knit_fail(joins[i].kind, joins[i].path, errno);
	}
	for (int i = 0; i < n; i++) {
		if (joins[i].flag == CLONE_NEWNS)
			mnt = &joins[i];
		else
			knit_setns(&joins[i]);
	}
	if (mnt) {
		knit_setns(mnt);
		// The old working directory belongs to the old mount tree.
		if (chdir("/") < 0)
			knit_fail(mnt->kind, mnt->path, errno);
	}
	// Renamed, so that children do not join again. Not unsetenv: it
	// shifts the entries of the array the kernel laid out, where the Go
	// runtime looks for the auxiliary vector right after the
	// environment's terminating NULL; it would find an empty one, and
	// fall back to /proc/self/auxv (the container's /proc, which may not
	// show this process) and run without the vDSO.
	for (char **e = environ; *e; e++) {
		if (strncmp(*e, KNIT_ENV "=", sizeof(KNIT_ENV)) == 0)
			memcpy(*e, KNIT_ENV_DONE, sizeof(KNIT_ENV_DONE) - 1);
	}
	free(spec);
}
