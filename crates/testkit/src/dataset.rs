//! A learnable two-class dataset laid out as one folder per class.

use std::path::Path;

/// One generated image: where it is and which class, patient and split it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedImage {
    /// Path relative to the dataset root (`Class/007.png`).
    pub path: String,
    /// Class (folder) name.
    pub label: String,
    /// Pseudo-patient: two consecutive images of a class.
    pub group: String,
    /// `train`, `val` or `test`: the first 60 % of each class's groups train, the next 20 %
    /// validate, the rest test.
    pub split: &'static str,
}

/// Writes `per_class` grey PNGs for each of `classes` under `root`: the first class's images
/// hold a bright disc, the second's a bright bar, both on seeded noise, at sides of 40, 48 and
/// 56 px. A small network tells them apart in a few epochs. Returns the images in writing order.
pub fn write_shapes(root: &Path, classes: [&str; 2], per_class: usize) -> Vec<GeneratedImage> {
    let mut images = Vec::new();
    let mut state = 12345u32;
    let mut noise = move || {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
        (state >> 16) % 60
    };
    for (class, label) in classes.into_iter().enumerate() {
        std::fs::create_dir_all(root.join(label)).expect("class folder created");
        for i in 0..per_class {
            let side = 40 + (i as u32 % 3) * 8;
            let c = side as i32 / 2 + (i as i32 % 5) - 2;
            let img = image::GrayImage::from_fn(side, side, |x, y| {
                let (dx, dy) = (x as i32 - c, y as i32 - c);
                let inside = if class == 0 {
                    dx * dx + dy * dy < (side as i32 / 4).pow(2)
                } else {
                    dx.abs() < side as i32 / 3 && dy.abs() < 3
                };
                image::Luma([(if inside { 180 } else { 30 } + noise()) as u8])
            });
            let path = format!("{label}/{i:03}.png");
            img.save(root.join(&path)).expect("PNG written");
            let group = i / 2;
            let split = match group * 10 / per_class.div_ceil(2) {
                0..=5 => "train",
                6..=7 => "val",
                _ => "test",
            };
            images.push(GeneratedImage {
                path,
                label: label.to_owned(),
                group: format!("{label}-{group}"),
                split,
            });
        }
    }
    images
}

/// The images as a split manifest (`path,label,group,split`, the format of `--manifest`).
pub fn manifest_csv(images: &[GeneratedImage]) -> String {
    let mut csv = String::from("path,label,group,split\n");
    for image in images {
        csv.push_str(&format!(
            "{},{},{},{}\n",
            image.path, image.label, image.group, image.split
        ));
    }
    csv
}
