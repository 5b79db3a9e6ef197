//! SQLite's own page cache (`pcache1`), wrapped so that a commit does not scan the whole cache.
//!
//! At the end of every write transaction SQLite drops cached pages past the end of the
//! database (`xTruncate(dbSize + 1)`). `pcache1` knows only the largest page number it has
//! seen since the last truncate, and when that is far past the end it walks its whole hash
//! table and every cached page. A B-tree split that reorders sibling pages parks one of them
//! for a moment under the lock-byte page's number (page 262,145 with 4 KiB pages), so nearly
//! every transaction that inserts at random leaves that mark and the next commit pays a full
//! scan: 8% of the payment writer's time with a 60 MB cache, growing with the cache.
//!
//! The wrapper keeps its own bound on the page numbers in each cache, which leaves out a page
//! parked under the lock-byte number while it is parked, and passes a truncate on only when a
//! page at or past the limit can exist. Every call is otherwise SQLite's own.
//!
//! [`install`] must run before SQLite is first used in the process (SQLite takes page cache
//! methods only before it initialises); later it changes nothing and says so.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static PASSED_ON: AtomicU64 = AtomicU64::new(0);
static SKIPPED: AtomicU64 = AtomicU64::new(0);

/// How many truncates of a cache the wrapper has passed on to SQLite and how many it has
/// skipped (nothing at or past the limit), since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncates {
    /// Passed on: a page at or past the limit could be cached.
    pub passed_on: u64,
    /// Skipped: no page at or past the limit was cached.
    pub skipped: u64,
}

/// The truncates so far.
pub fn truncates() -> Truncates {
    Truncates { passed_on: PASSED_ON.load(Ordering::Relaxed), skipped: SKIPPED.load(Ordering::Relaxed) }
}

/// Installs the wrapper around SQLite's default page cache, once per process. True when the
/// wrapper is in place: installed now or earlier; false when SQLite was already initialised
/// (it then keeps its default cache, which is correct, only slower).
pub fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(methods::install)
}

#[allow(unsafe_code)]
mod methods {
    use rusqlite::ffi;
    use std::ffi::{c_int, c_uint};
    use std::sync::OnceLock;
    use std::sync::atomic::Ordering;

    /// Where SQLite keeps the lock bytes (its default `PENDING_BYTE`, 1 GiB): the page that
    /// holds them is never used, so `balance_nonroot` borrows its number to swap two pages.
    const PENDING_BYTE: c_uint = 0x4000_0000;

    /// SQLite's default methods, which every call ends in.
    struct Default(ffi::sqlite3_pcache_methods2);
    // SAFETY: the methods are plain function pointers and `pArg`, which SQLite's default
    // cache does not use; SQLite calls them from any thread.
    unsafe impl Send for Default {}
    unsafe impl Sync for Default {}

    static DEFAULT: OnceLock<Default> = OnceLock::new();

    /// One cache: SQLite's, and a bound on the page numbers in it.
    struct Cache {
        inner: *mut ffi::sqlite3_pcache,
        /// No page in `inner` has a larger number, except pages parked under `parking`.
        max_key: c_uint,
        /// Pages now under the lock-byte page's number (a swap in progress).
        parked: u32,
        parking: c_uint,
    }

    pub(super) fn install() -> bool {
        // SAFETY: sqlite3_config is called before SQLite initialises (it refuses with
        // SQLITE_MISUSE otherwise, which is then reported as not installed); the struct
        // pointers are valid for the call, and SQLite copies the methods it is given.
        unsafe {
            let mut default: ffi::sqlite3_pcache_methods2 = std::mem::zeroed();
            if ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, &raw mut default) != ffi::SQLITE_OK {
                return false;
            }
            let ours = ffi::sqlite3_pcache_methods2 {
                iVersion: 1,
                pArg: default.pArg,
                xInit: default.xInit,
                xShutdown: default.xShutdown,
                xCreate: Some(create),
                xCachesize: Some(cache_size),
                xPagecount: Some(page_count),
                xFetch: Some(fetch),
                xUnpin: Some(unpin),
                xRekey: Some(rekey),
                xTruncate: Some(truncate),
                xDestroy: Some(destroy),
                xShrink: Some(shrink),
            };
            if DEFAULT.set(Default(default)).is_err() {
                return false;
            }
            ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &raw const ours) == ffi::SQLITE_OK
        }
    }

    fn default() -> &'static ffi::sqlite3_pcache_methods2 {
        // Set before any method is installed, so before SQLite can call one.
        &DEFAULT.get().expect("the default methods are kept before ours are installed").0
    }

    /// # Safety
    /// `p` is a pointer [`create`] returned and [`destroy`] has not yet freed.
    unsafe fn cache<'a>(p: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
        // SAFETY: per the contract; SQLite calls one cache's methods from one connection at
        // a time.
        unsafe { &mut *p.cast::<Cache>() }
    }

    unsafe extern "C" fn create(page_size: c_int, extra: c_int, purgeable: c_int) -> *mut ffi::sqlite3_pcache {
        let Some(create) = default().xCreate else { return std::ptr::null_mut() };
        // SAFETY: SQLite's own method with SQLite's arguments.
        let inner = unsafe { create(page_size, extra, purgeable) };
        if inner.is_null() {
            return inner;
        }
        let parking = c_uint::try_from(page_size).ok().filter(|s| *s > 0).map_or(c_uint::MAX, |s| PENDING_BYTE / s + 1);
        Box::into_raw(Box::new(Cache { inner, max_key: 0, parked: 0, parking })).cast()
    }

    unsafe extern "C" fn cache_size(p: *mut ffi::sqlite3_pcache, pages: c_int) {
        // SAFETY: `p` came from `create`.
        let cache = unsafe { cache(p) };
        if let Some(f) = default().xCachesize {
            // SAFETY: SQLite's method on SQLite's cache.
            unsafe { f(cache.inner, pages) }
        }
    }

    unsafe extern "C" fn page_count(p: *mut ffi::sqlite3_pcache) -> c_int {
        // SAFETY: `p` came from `create`.
        let cache = unsafe { cache(p) };
        // SAFETY: SQLite's method on SQLite's cache.
        default().xPagecount.map_or(0, |f| unsafe { f(cache.inner) })
    }

    unsafe extern "C" fn fetch(p: *mut ffi::sqlite3_pcache, key: c_uint, create: c_int) -> *mut ffi::sqlite3_pcache_page {
        // SAFETY: `p` came from `create`.
        let cache = unsafe { cache(p) };
        if create != 0 {
            // Raised whether or not a page is made: the bound only has to hold from above.
            cache.max_key = cache.max_key.max(key);
        }
        // SAFETY: SQLite's method on SQLite's cache.
        default().xFetch.map_or(std::ptr::null_mut(), |f| unsafe { f(cache.inner, key, create) })
    }

    unsafe extern "C" fn unpin(p: *mut ffi::sqlite3_pcache, page: *mut ffi::sqlite3_pcache_page, discard: c_int) {
        // SAFETY: `p` came from `create`.
        let cache = unsafe { cache(p) };
        if let Some(f) = default().xUnpin {
            // SAFETY: SQLite's method on SQLite's cache and page.
            unsafe { f(cache.inner, page, discard) }
        }
    }

    unsafe extern "C" fn rekey(p: *mut ffi::sqlite3_pcache, page: *mut ffi::sqlite3_pcache_page, old: c_uint, new: c_uint) {
        // SAFETY: `p` came from `create`.
        let cache = unsafe { cache(p) };
        if new == cache.parking {
            cache.parked += 1;
        } else {
            cache.max_key = cache.max_key.max(new);
        }
        if old == cache.parking {
            cache.parked = cache.parked.saturating_sub(1);
        }
        if let Some(f) = default().xRekey {
            // SAFETY: SQLite's method on SQLite's cache and page.
            unsafe { f(cache.inner, page, old, new) }
        }
    }

    unsafe extern "C" fn truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
        // SAFETY: `p` came from `create`.
        let cache = unsafe { cache(p) };
        if cache.parked == 0 && limit > cache.max_key {
            // No page at or past `limit` can be in the cache: nothing to drop.
            super::SKIPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        super::PASSED_ON.fetch_add(1, Ordering::Relaxed);
        if let Some(f) = default().xTruncate {
            // SAFETY: SQLite's method on SQLite's cache.
            unsafe { f(cache.inner, limit) }
        }
        cache.max_key = cache.max_key.min(limit.saturating_sub(1));
        if limit <= cache.parking {
            cache.parked = 0;
        }
    }

    unsafe extern "C" fn destroy(p: *mut ffi::sqlite3_pcache) {
        // SAFETY: `p` came from `create` (Box::into_raw) and SQLite destroys a cache once.
        let cache = unsafe { Box::from_raw(p.cast::<Cache>()) };
        if let Some(f) = default().xDestroy {
            // SAFETY: SQLite's method on SQLite's cache.
            unsafe { f(cache.inner) }
        }
    }

    unsafe extern "C" fn shrink(p: *mut ffi::sqlite3_pcache) {
        // SAFETY: `p` came from `create`.
        let cache = unsafe { cache(p) };
        if let Some(f) = default().xShrink {
            // SAFETY: SQLite's method on SQLite's cache.
            unsafe { f(cache.inner) }
        }
    }
}
