/* The Rust `churn` benchmark's loop in C: WINDOW live blocks, round robin
   free the oldest and malloc a new one of a pre-drawn size, touch both ends. */
#include <stdlib.h>
#include <stdio.h>
#define SIZES (1<<14)
int main(int argc,char**argv){ long n = atol(argv[1]); size_t lo=8, hi=256; int window=64;
 static size_t sizes[SIZES]; unsigned long long x=0x5eed;
 for(int i=0;i<SIZES;i++){ x ^= x<<13; x^=x>>7; x^=x<<17; sizes[i]= lo + x%(hi-lo+1); }
 void** live = malloc(sizeof(void*)*window);
 for(int i=0;i<window;i++){ live[i]=malloc(sizes[i]); }
 int slot=0;
 for(long ops=0; ops<n; ops++){ free(live[slot]); size_t s=sizes[ops & (SIZES-1)]; char* p=malloc(s); *(volatile char*)p='a'; *(volatile char*)(p+s-1)='b'; live[slot]=p; slot = slot+1==window?0:slot+1; }
 for(int i=0;i<window;i++) free(live[i]); free(live); printf("ok\n"); return 0; }
