/* Invalid frees, chosen by argv[1]; prints "survived" if the process goes on.
 * The address is printed before any free, so that nothing is allocated
 * between the two frees of a double free (a double free is detectable only
 * while the memory has not been handed out again). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static char in_data[64] = {1};

int main(int argc, char **argv) {
    const char *c = argc > 1 ? argv[1] : "";
    char on_stack[64];
    void *p = NULL;
    int twice = 0;
    if (!strcmp(c, "stack")) p = on_stack;
    else if (!strcmp(c, "static")) p = in_data + 16;
    else if (!strcmp(c, "mmap")) p = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    else if (!strcmp(c, "interior")) p = (char *)malloc(256) + 16;
    else if (!strcmp(c, "double-large")) { p = malloc(200000); twice = 1; }
    else if (!strcmp(c, "double-huge")) { p = malloc(40 << 20); twice = 1; }
    else if (!strcmp(c, "double-small")) { p = malloc(64); twice = 1; }
    else if (!strcmp(c, "double-cached-huge")) { p = malloc(4 << 20); twice = 1; }
    printf("misuse-address %p\n", p);
    fflush(stdout);
    if (twice) free(p);
    free(p);
    if (twice) {
        /* Ignored: the block must still go to one caller only. */
        char *a = malloc(c[7] == 's' ? 64 : 4 << 20), *b = malloc(c[7] == 's' ? 64 : 4 << 20);
        if (a == b) { puts("handed out twice"); return 1; }
    }
    puts("survived");
    return 0;
}
