//! Colour to grey: the BT.601 luma of a pixel in fixed point, and when a pixel counts as grey.

/// Largest difference between the RGB channels of a pixel (8-bit scale) that still counts as
/// grey: lossy compression of grey content leaves a few levels.
pub const COLOUR_TOLERANCE: u8 = 24;

/// BT.601 luma weights in 16.16 fixed point; they sum to exactly 65536.
const LUMA_R: u64 = 19595;
const LUMA_G: u64 = 38470;
const LUMA_B: u64 = 7471;

/// BT.601 luma of 8-bit RGB, rounded.
#[inline]
pub(crate) fn luma8(r: u32, g: u32, b: u32) -> u8 {
    let y = LUMA_R * u64::from(r) + LUMA_G * u64::from(g) + LUMA_B * u64::from(b);
    ((y + 32768) >> 16) as u8
}

/// BT.601 luma of 16-bit RGB scaled to 8 bits (`/ 257`), rounded once.
#[inline]
pub(crate) fn luma16_to_8(r: u16, g: u16, b: u16) -> u8 {
    const DIV: u64 = 65536 * 257;
    let y = LUMA_R * u64::from(r) + LUMA_G * u64::from(g) + LUMA_B * u64::from(b);
    ((y + DIV / 2) / DIV) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_weights_are_bt601() {
        assert_eq!(luma8(255, 0, 0), 76); // 0.299 × 255 = 76.2
        assert_eq!(luma8(0, 255, 0), 150); // 0.587 × 255 = 149.7
        assert_eq!(luma8(0, 0, 255), 29); // 0.114 × 255 = 29.1
        assert_eq!(LUMA_R + LUMA_G + LUMA_B, 65536);
    }
}
