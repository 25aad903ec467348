/* A child of a multi-threaded parent allocates and frees. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int stop;

static void *churn(void *arg) {
    (void)arg;
    while (!stop) { void *p = malloc(64 + (size_t)(rand() % 5000)); free(p); }
    return NULL;
}

int main(void) {
    pthread_t t[3];
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, churn, NULL);
    for (int round = 0; round < 20; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (int i = 0; i < 20000; i++) {
                char *p = malloc(1 + i % 3000);
                memset(p, 1, 1 + i % 3000);
                free(p);
            }
            void *big = malloc(8 << 20); free(big);
            _exit(0);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) { printf("child %d failed: %d\n", round, st); return 1; }
    }
    stop = 1;
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    puts("fork ok");
    return 0;
}
