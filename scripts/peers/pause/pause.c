/* The pod sandbox's pause process, built here because registry.k8s.io/pause
 * cannot be pulled (scripts/kube-node imports it under that name). What
 * upstream's build/pause/linux/pause.c does: PID 1 of the pod's namespaces,
 * reaps adopted children, exits on SIGINT/SIGTERM. Built static by
 * scripts/build-peers so that the image needs no libc. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { _exit(sig == SIGTERM || sig == SIGINT ? 0 : 1); }

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction term = {.sa_handler = quit}, child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
    if (getpid() != 1) {
        /* upstream warns too: only a pod's PID 1 reaps zombies for the pod */
        static const char msg[] = "pause: not PID 1, reaping only own children\n";
        (void)!write(2, msg, sizeof msg - 1);
    }
    if (sigaction(SIGINT, &term, NULL) || sigaction(SIGTERM, &term, NULL) || sigaction(SIGCHLD, &child, NULL))
        return 1;
    for (;;)
        pause();
}
