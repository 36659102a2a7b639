# cython: language_level=3
# rnnengine.kernels._cpu: what the CPU (and the OS, for the vector registers'
# state) supports, read with the compiler's own CPUID support. Compiled with no
# ISA flags, so it runs on every x86-64 CPU; rnnengine.kernels._isa picks the
# kernel build from it.
#
# __builtin_cpu_supports (GCC, Clang) checks XGETBV too: AVX and AVX-512 count
# only where the OS saves their registers, as numpy's dispatch requires.

cdef extern from *:
    """
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    #define RNN_CPU_X86 1
    #define RNN_HAS(name) (__builtin_cpu_supports(name) ? 1 : 0)
    static void rnn_cpu_init(void) { __builtin_cpu_init(); }
    #else
    #define RNN_CPU_X86 0
    #define RNN_HAS(name) 0
    static void rnn_cpu_init(void) {}
    #endif
    static int rnn_has_sse42(void) { return RNN_HAS("sse4.2"); }
    static int rnn_has_popcnt(void) { return RNN_HAS("popcnt"); }
    static int rnn_has_avx(void) { return RNN_HAS("avx"); }
    static int rnn_has_avx2(void) { return RNN_HAS("avx2"); }
    static int rnn_has_fma(void) { return RNN_HAS("fma"); }
    static int rnn_has_bmi2(void) { return RNN_HAS("bmi2"); }
    static int rnn_has_avx512f(void) { return RNN_HAS("avx512f"); }
    static int rnn_has_avx512bw(void) { return RNN_HAS("avx512bw"); }
    static int rnn_has_avx512cd(void) { return RNN_HAS("avx512cd"); }
    static int rnn_has_avx512dq(void) { return RNN_HAS("avx512dq"); }
    static int rnn_has_avx512vl(void) { return RNN_HAS("avx512vl"); }
    """
    int RNN_CPU_X86
    void rnn_cpu_init()
    int rnn_has_sse42()
    int rnn_has_popcnt()
    int rnn_has_avx()
    int rnn_has_avx2()
    int rnn_has_fma()
    int rnn_has_bmi2()
    int rnn_has_avx512f()
    int rnn_has_avx512bw()
    int rnn_has_avx512cd()
    int rnn_has_avx512dq()
    int rnn_has_avx512vl()


def features():
    """{feature name: bool} for the features the kernel builds need; empty off x86."""
    if not RNN_CPU_X86:
        return {}
    rnn_cpu_init()
    return {
        "sse4.2": bool(rnn_has_sse42()),
        "popcnt": bool(rnn_has_popcnt()),
        "avx": bool(rnn_has_avx()),
        "avx2": bool(rnn_has_avx2()),
        "fma": bool(rnn_has_fma()),
        "bmi2": bool(rnn_has_bmi2()),
        "avx512f": bool(rnn_has_avx512f()),
        "avx512bw": bool(rnn_has_avx512bw()),
        "avx512cd": bool(rnn_has_avx512cd()),
        "avx512dq": bool(rnn_has_avx512dq()),
        "avx512vl": bool(rnn_has_avx512vl()),
    }
