/*
 * LD_PRELOAD shim for Debian 12's user-mode-linux (6.1) on hosts whose XSAVE area is larger
 * than the 832 bytes UML 6.1 knows (x87 + SSE + AVX), i.e. any host with AVX-512 or AMX.
 *
 * UML saves and restores a guest thread's FP registers with PTRACE_GETREGSET/SETREGSET
 * (NT_X86_XSTATE) and an 832-byte buffer. The host kernel refuses a SETREGSET that is not the
 * whole XSAVE area (EFAULT: "ptrace set fp regs failed, errno = 14", and the guest panics).
 * This shim reads the whole area on every GETREGSET (per host pid), hands UML its 832-byte
 * prefix, and on SETREGSET writes the whole area back: UML's prefix over the last whole read
 * of that pid. So the registers UML does not know (AVX-512 opmask and upper ZMM, PKRU) are
 * those the process had when UML last stopped it, not those of the page-fault stub handler
 * that ran in between (which would corrupt glibc's EVEX string functions).
 * Limit: guest threads of one process share a host pid, so a preemption between two of them
 * in the middle of AVX-512 code can still mix their AVX-512 registers (UML 6.1 has the same
 * limit on any AVX-512 host). Newer UML kernels size the buffer at run time; there this shim
 * passes every call through unchanged.
 *
 * Built by lab/vm/shim.py with the host's C compiler: cc -O2 -shared -fPIC -o X.so X.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifndef NT_X86_XSTATE
#define NT_X86_XSTATE 0x202
#endif
#define XSTATE_BV_OFFSET 512
#define SLOTS 4096
#define MAX_XSTATE 65536

typedef long (*ptrace_fn)(enum __ptrace_request, pid_t, void *, void *);
struct slot { pid_t pid; size_t len; unsigned char *buf; };
static struct slot slots[SLOTS];
static ptrace_fn real;

static struct slot *slot_of(pid_t pid)
{
	unsigned i = (unsigned)pid % SLOTS;
	if (!slots[i].buf && !(slots[i].buf = aligned_alloc(64, MAX_XSTATE)))
		return NULL;
	if (slots[i].pid != pid) { slots[i].pid = pid; slots[i].len = 0; }
	return &slots[i];
}

static long get_whole(pid_t pid, struct slot *s)
{
	struct iovec whole = {s->buf, MAX_XSTATE};
	long r = real(PTRACE_GETREGSET, pid, (void *)NT_X86_XSTATE, &whole);
	s->len = r == 0 ? whole.iov_len : 0;
	return r;
}

long ptrace(enum __ptrace_request request, ...)
{
	va_list ap;
	va_start(ap, request);
	pid_t pid = va_arg(ap, pid_t);
	void *addr = va_arg(ap, void *);
	void *data = va_arg(ap, void *);
	va_end(ap);
	if (!real)
		real = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
	if ((uintptr_t)addr != NT_X86_XSTATE ||
	    (request != PTRACE_GETREGSET && request != PTRACE_SETREGSET))
		return real(request, pid, addr, data);
	struct iovec *given = data;
	struct slot *s = slot_of(pid);
	if (!s)
		return real(request, pid, addr, data);
	if (request == PTRACE_GETREGSET) {
		long r = get_whole(pid, s);
		if (r != 0)
			return real(request, pid, addr, data);
		size_t n = given->iov_len < s->len ? given->iov_len : s->len;
		memcpy(given->iov_base, s->buf, n);
		given->iov_len = n;
		return 0;
	}
	if (s->len == 0 && get_whole(pid, s) != 0)
		return real(request, pid, addr, data);
	if (given->iov_len >= s->len || given->iov_len < XSTATE_BV_OFFSET + 8)
		return real(request, pid, addr, data);
	/* the components the short image holds come from it, the others from the last full read */
	uint64_t bv_whole, bv_given, held = 0;
	memcpy(&bv_whole, s->buf + XSTATE_BV_OFFSET, 8);
	memcpy(s->buf, given->iov_base, given->iov_len);
	memcpy(&bv_given, s->buf + XSTATE_BV_OFFSET, 8);
	held = given->iov_len >= 832 ? 0x7 : 0x3; /* x87+SSE (+AVX from 832 bytes on) */
	bv_whole = (bv_given & held) | (bv_whole & ~held);
	memcpy(s->buf + XSTATE_BV_OFFSET, &bv_whole, 8);
	struct iovec whole = {s->buf, s->len};
	return real(PTRACE_SETREGSET, pid, addr, &whole);
}
