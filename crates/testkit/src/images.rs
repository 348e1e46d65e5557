//! Generated images.

use std::io::Cursor;

/// A `width × height` grey PNG whose pixel `(x, y)` is `pixel(x, y)`.
pub fn grey_png(width: u32, height: u32, pixel: impl Fn(u32, u32) -> u8) -> Vec<u8> {
    let image = image::GrayImage::from_fn(width, height, |x, y| image::Luma([pixel(x, y)]));
    let mut out = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("a grey image encodes as PNG");
    out
}
