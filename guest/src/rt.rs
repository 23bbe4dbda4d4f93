//! The wasm32 runtime pieces a `no_std` component needs: allocator, panic
//! handler and `cabi_realloc`.
//!
//! Without std there is no wasi-libc, so nothing else provides these.
//! A std guest would get them for free, but std drags `wasi:cli` and
//! `wasi:io` imports into the component even when unused, and the core must
//! import nothing but tlskeeper's own interfaces.
//!
//! # Security
//!
//! A panic becomes a wasm trap (`unreachable`): the host sees a failed call,
//! logs it and can reinstantiate the core; no state is half-written inside
//! the guest that a later call could observe, because the instance is
//! discarded.
//!
//! # Limitations
//!
//! The panic message is lost; the trap's backtrace in the host names the
//! function.

use alloc::alloc::{Layout, alloc, realloc};

#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

/// The canonical ABI's allocation entry point: the host calls it to place
/// arguments (strings, lists) in the core's memory.
///
/// # Safety
///
/// Called only by the component runtime, with `old_ptr`/`old_len`/`align`
/// describing an allocation it obtained from this same function (or
/// `old_len == 0`), and `align` a power of two.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_realloc(old_ptr: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8 {
    if new_len == 0 {
        // A zero-sized allocation needs no memory, only a well-aligned,
        // non-null pointer.
        return align as *mut u8;
    }
    let ptr = if old_len == 0 {
        // SAFETY: the runtime passes a power-of-two `align` and a non-zero
        // size was checked above.
        unsafe { alloc(Layout::from_size_align_unchecked(new_len, align)) }
    } else {
        // SAFETY: `old_ptr` came from this allocator with this layout, per
        // the function's contract.
        unsafe { realloc(old_ptr, Layout::from_size_align_unchecked(old_len, align), new_len) }
    };
    if ptr.is_null() {
        // Out of memory inside the store limit: trap rather than hand the
        // runtime a null pointer it would write through.
        core::arch::wasm32::unreachable();
    }
    ptr
}

/// `memcmp`, which slice and array comparisons lower to. On wasm32-wasip2 it
/// normally comes from wasi-libc; a `no_std` component links no libc, and an
/// unresolved `env::memcmp` import would make the module invalid. (memcpy and
/// memset are provided by `compiler_builtins`; memcmp is not on this target.)
///
/// # Safety
///
/// `a` and `b` must be valid for reads of `n` bytes, as for C's `memcmp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: both pointers are valid for `n` bytes per the contract.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// `bcmp`: equality-only `memcmp`, which LLVM may emit instead.
///
/// # Safety
///
/// As for [`memcmp`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}
