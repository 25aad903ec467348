// The churn loop (benches/c/callgrind/churn.c) through operator new and sized operator delete, for callgrind.
#include <cstdlib>
#include <cstdio>
#include <new>
int main(int argc,char**argv){ long n=atol(argv[1]); static size_t sizes[16384]; unsigned long long x=0x5eed;
 for(int i=0;i<16384;i++){ x^=x<<13;x^=x>>7;x^=x<<17; sizes[i]=8+x%249; }
 void* live[64]; size_t ls[64]; for(int i=0;i<64;i++){ls[i]=sizes[i]; live[i]=::operator new(ls[i]);}
 int slot=0; for(long o=0;o<n;o++){ ::operator delete(live[slot], ls[slot]); size_t s=sizes[o&16383]; char*p=(char*)::operator new(s); *(volatile char*)p='a'; live[slot]=p; ls[slot]=s; slot=slot+1==64?0:slot+1; }
 for(int i=0;i<64;i++) ::operator delete(live[i], ls[i]); puts("ok"); }
