//! Field accessors that cannot panic. A header is borrowed as `&[u8; N]`
//! once its length has been checked (`first_chunk`), the smoltcp "check once" habit in a form the
//! compiler proves: every accessor takes its offset as a const generic and
//! asserts `offset + width <= N` at compile time, and a single byte is read
//! by constant index into the array, which rustc checks the same way. A wrong
//! offset fails the build instead of panicking on a packet.

/// Big-endian `u16` at byte `AT` of a header of length `N`.
#[inline(always)]
pub const fn read_u16<const AT: usize, const N: usize>(hdr: &[u8; N]) -> u16 {
    const { assert!(AT + 2 <= N, "field outside header") };
    u16::from_be_bytes([hdr[AT], hdr[AT + 1]])
}

/// Big-endian `u32` at byte `AT` of a header of length `N`.
#[inline(always)]
pub const fn read_u32<const AT: usize, const N: usize>(hdr: &[u8; N]) -> u32 {
    const { assert!(AT + 4 <= N, "field outside header") };
    u32::from_be_bytes([hdr[AT], hdr[AT + 1], hdr[AT + 2], hdr[AT + 3]])
}

/// The `M` bytes at `AT..AT + M` of a header of length `N` (an IPv6
/// address, a MAC).
#[inline(always)]
pub const fn read_bytes<const AT: usize, const M: usize, const N: usize>(hdr: &[u8; N]) -> [u8; M] {
    const { assert!(AT + M <= N, "field outside header") };
    let mut bytes = [0u8; M];
    let mut i = 0;
    // A loop, as `copy_from_slice` is not const; the assertion above keeps
    // every index inside `hdr`.
    while i < M {
        bytes[i] = hdr[AT + i];
        i += 1;
    }
    bytes
}

/// Writes `value` big-endian at byte `AT` of a header of length `N`.
#[inline(always)]
pub fn write_u16<const AT: usize, const N: usize>(hdr: &mut [u8; N], value: u16) {
    write_bytes::<AT, 2, N>(hdr, value.to_be_bytes());
}

/// Writes `value` big-endian at byte `AT` of a header of length `N`.
#[inline(always)]
pub fn write_u32<const AT: usize, const N: usize>(hdr: &mut [u8; N], value: u32) {
    write_bytes::<AT, 4, N>(hdr, value.to_be_bytes());
}

/// Copies `bytes` to `AT..AT + M` of a header of length `N`.
#[inline(always)]
pub fn write_bytes<const AT: usize, const M: usize, const N: usize>(
    hdr: &mut [u8; N],
    bytes: [u8; M],
) {
    const { assert!(AT + M <= N, "field outside header") };
    hdr[AT..AT + M].copy_from_slice(&bytes);
}
