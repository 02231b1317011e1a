//! Short, stable names for the 26 built-in styles of the multistyle network.
//!
//! Each name describes what the style looks like on a real frame (chosen from a contact sheet of all
//! 26 styles on a Big Buck Bunny frame). Names are part of the user-facing interface (`input/<style>/`
//! folders, job ids), so they never change; index `i` is style `i` of the network.

use crate::spec::StyleInfo;

/// How many styles the multistyle network holds.
pub(crate) const NUM_STYLES: usize = 26;

/// The name of every built-in style, by index.
pub(crate) const STYLE_NAMES: [&str; NUM_STYLES] = [
    // 0: ochre and pale-blue washes with dark sketched contours.
    "ochre-sketch",
    // 1: thick black lines around flat yellow and white blocks.
    "yellow-woodcut",
    // 2: black-and-white cross-hatching with a warm peach tint.
    "charcoal-hatch",
    // 3: dense swirling streaks in electric blue, orange and black; the subject dissolves.
    "electric-swirl",
    // 4: deep crimson, ochre and sky-blue planes with dark outlines.
    "crimson-fresco",
    // 5: angular, faceted strokes in orange, red and slate blue.
    "autumn-cubist",
    // 6: dark indigo texture of round cells, like a leopard print.
    "blue-cells",
    // 7: bold flat areas of primary blue, yellow and red.
    "primary-blocks",
    // 8: pink, teal and yellow crayon strokes on a white ground.
    "pastel-crayon",
    // 9: small tesserae of dark teal and red on white.
    "teal-mosaic",
    // 10: earthy rust and brown oil tones.
    "rust-brown",
    // 11: brown ink line work over golden yellow.
    "sepia-ink",
    // 12: soft, blurred lavender and straw-yellow impressionism.
    "lavender-haze",
    // 13: dark leading lines around teal, red and lime panes.
    "stained-glass",
    // 14: pale icy blue and cream wash.
    "ice-blue",
    // 15: pastel cells outlined in dark teal, like crazy paving.
    "pastel-mosaic",
    // 16: diagonal blue hatching with orange and yellow highlights.
    "blue-orange-hatch",
    // 17: a grid of red, orange and blue bricks; the subject dissolves.
    "brick-grid",
    // 18: khaki and tan strokes that follow the shapes like wood grain.
    "khaki-grain",
    // 19: swirling blue night-sky strokes with yellow accents.
    "starry-blue",
    // 20: flame-like red and orange with dark blue shadows.
    "ember-red",
    // 21: black cut-out shapes on pastel blue, yellow and pink.
    "pop-cutout",
    // 22: black calligraphic brush strokes on cream with red accents.
    "black-ink",
    // 23: muted dark green and cream gouache.
    "green-gouache",
    // 24: navy and cream textured block print.
    "navy-print",
    // 25: dense multicoloured brushwork in orange, blue and gold.
    "tapestry",
];

/// Every built-in style with its index, in index order.
pub(crate) static STYLES: [StyleInfo; NUM_STYLES] = {
    let mut table = [StyleInfo { index: 0, name: "" }; NUM_STYLES];
    let mut i = 0;
    while i < NUM_STYLES {
        table[i] = StyleInfo {
            index: i,
            name: STYLE_NAMES[i],
        };
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::{STYLE_NAMES, STYLES};

    #[test]
    fn table_matches_names() {
        for (i, info) in STYLES.iter().enumerate() {
            assert_eq!(info.index, i);
            assert_eq!(info.name, STYLE_NAMES[i]);
        }
    }

    #[test]
    fn names_are_unique_lowercase_ascii() {
        for (i, name) in STYLE_NAMES.iter().enumerate() {
            assert!(!name.is_empty(), "style {i} has an empty name");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "style {i} name {name:?} is not [a-z0-9-]"
            );
            assert!(
                !STYLE_NAMES[..i].contains(name),
                "style name {name:?} is used twice"
            );
            // A name must never parse as an index or look like a blend or a file.
            assert!(name.parse::<usize>().is_err());
        }
    }
}
