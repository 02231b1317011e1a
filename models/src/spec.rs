//! Style specifications: which built-in styles (and how much of each), or a style image.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::ModelError;
use crate::styles::{NUM_STYLES, STYLES};

/// File extensions taken to mean "a style image" even when no such file exists (yet).
const IMAGE_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"];

/// What to style with.
#[derive(Debug, Clone, PartialEq)]
pub enum StyleSpec {
    /// A blend of built-in styles: `(index, weight)`, indices ascending and unique, weights
    /// positive and summing to 1 (as [`StyleSpec::blend`] and [`FromStr`] build it).
    Blend(Vec<(usize, f32)>),
    /// Any picture as the style (the arbitrary-style network).
    Image(PathBuf),
}

/// How strongly to apply the style, and whether to keep the frame's own colours.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StyleOptions {
    /// 0 keeps the frame, 1 is fully styled; the result is `s*styled + (1-s)*frame`.
    pub strength: f32,
    /// Keep the styled brightness (BT.601 luma) but the frame's own colour (Cb/Cr).
    pub preserve_colour: bool,
}

impl Default for StyleOptions {
    fn default() -> Self {
        Self {
            strength: 1.0,
            preserve_colour: false,
        }
    }
}

/// One built-in style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StyleInfo {
    /// Position in the network's style-weight vector.
    pub index: usize,
    /// Short lower-case name, usable instead of the index.
    pub name: &'static str,
}

/// All built-in styles, in index order.
pub fn styles() -> &'static [StyleInfo] {
    &STYLES
}

impl StyleSpec {
    /// A normalised blend from `(index, weight)` pairs: duplicates are summed, zero weights dropped,
    /// weights scaled to sum 1. Negative, non-finite or all-zero weights are rejected.
    pub fn blend(parts: &[(usize, f32)]) -> Result<Self, ModelError> {
        let text = parts
            .iter()
            .map(|(i, w)| format!("{i}:{w}"))
            .collect::<Vec<_>>()
            .join(",");
        normalise(parts, &text).map(StyleSpec::Blend)
    }

    /// The 26 style weights of a blend (`None` for a style image).
    pub fn weights(&self) -> Option<[f32; NUM_STYLES]> {
        match self {
            StyleSpec::Blend(parts) => {
                let mut w = [0.0; NUM_STYLES];
                for &(i, wt) in parts {
                    if let Some(slot) = w.get_mut(i) {
                        *slot += wt;
                    }
                }
                Some(w)
            }
            StyleSpec::Image(_) => None,
        }
    }
}

fn normalise(parts: &[(usize, f32)], spec: &str) -> Result<Vec<(usize, f32)>, ModelError> {
    let bad = |reason: &str| ModelError::BadBlend {
        spec: spec.to_owned(),
        reason: reason.to_owned(),
    };
    let mut sums = [0.0f64; NUM_STYLES];
    for &(index, weight) in parts {
        if index >= NUM_STYLES {
            return Err(ModelError::StyleIndexOutOfRange {
                index,
                max: NUM_STYLES - 1,
            });
        }
        if !weight.is_finite() || weight < 0.0 {
            return Err(bad("weights must be finite and not negative"));
        }
        sums[index] += f64::from(weight);
    }
    let total: f64 = sums.iter().sum();
    if total <= 0.0 {
        return Err(bad("weights must not all be zero"));
    }
    #[allow(clippy::cast_possible_truncation)] // weights are f32 by contract
    let blend = sums
        .iter()
        .enumerate()
        .filter(|(_, w)| **w > 0.0)
        .map(|(i, w)| (i, (w / total) as f32))
        .collect();
    Ok(blend)
}

fn looks_like_image(s: &str) -> bool {
    let path = std::path::Path::new(s);
    if path.is_file() {
        return true;
    }
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn style_index(key: &str) -> Result<usize, ModelError> {
    if let Ok(index) = key.parse::<usize>() {
        if index >= NUM_STYLES {
            return Err(ModelError::StyleIndexOutOfRange {
                index,
                max: NUM_STYLES - 1,
            });
        }
        return Ok(index);
    }
    STYLES
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(key))
        .map(|s| s.index)
        .ok_or_else(|| ModelError::UnknownStyle {
            name: key.to_owned(),
            suggestion: closest_name(key),
        })
}

/// The built-in style name closest to `key` (Jaro-Winkler similarity, case-insensitive), when it
/// is close enough to be what was meant.
pub fn closest_name(key: &str) -> Option<&'static str> {
    let key = key.to_ascii_lowercase();
    STYLES
        .iter()
        .map(|s| (strsim::jaro_winkler(&key, s.name), s.name))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| name)
}

impl FromStr for StyleSpec {
    type Err = ModelError;

    /// Parses `3`, `mosaic`, `3:0.7,12:0.3`, `mosaic:0.5,ribbons:0.5`, or a path to an image
    /// (an existing file, or any string ending in an image extension).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if looks_like_image(trimmed) {
            return Ok(StyleSpec::Image(PathBuf::from(trimmed)));
        }
        let bad = |reason: String| ModelError::BadBlend {
            spec: s.to_owned(),
            reason,
        };
        let mut parts = Vec::new();
        for part in trimmed.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(bad("empty entry".to_owned()));
            }
            let (key, weight) = match part.split_once(':') {
                Some((key, weight)) => {
                    let weight: f32 = weight
                        .trim()
                        .parse()
                        .map_err(|_| bad(format!("weight {:?} is not a number", weight.trim())))?;
                    (key.trim(), weight)
                }
                None => (part, 1.0),
            };
            parts.push((style_index(key)?, weight));
        }
        normalise(&parts, s).map(StyleSpec::Blend)
    }
}

impl fmt::Display for StyleSpec {
    /// The canonical form: indices ascending, `i` for a single style, `i:w,j:v` for a blend,
    /// the path for an image. Stable across releases (job ids depend on it), so it uses
    /// indices, never names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StyleSpec::Blend(parts) if parts.len() == 1 => write!(f, "{}", parts[0].0),
            StyleSpec::Blend(parts) => {
                for (n, (i, w)) in parts.iter().enumerate() {
                    if n > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{i}:{w}")?;
                }
                Ok(())
            }
            StyleSpec::Image(path) => write!(f, "{}", path.display()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<StyleSpec, ModelError> {
        s.parse()
    }

    #[test]
    fn single_index_and_name() {
        assert_eq!(parse("3").unwrap(), StyleSpec::Blend(vec![(3, 1.0)]));
        let name = STYLES[25].name;
        assert_eq!(parse(name).unwrap(), StyleSpec::Blend(vec![(25, 1.0)]));
        assert_eq!(
            parse(&name.to_uppercase()).unwrap(),
            StyleSpec::Blend(vec![(25, 1.0)])
        );
    }

    #[test]
    fn blend_is_normalised_sorted_and_merged() {
        let spec = parse("12:3, 3:1").unwrap();
        assert_eq!(spec, StyleSpec::Blend(vec![(3, 0.25), (12, 0.75)]));
        let spec = parse("3:0.7,12:0.3").unwrap();
        assert_eq!(spec.to_string(), "3:0.7,12:0.3");
        let merged = parse("4:1,4:1,5:2").unwrap();
        assert_eq!(merged, StyleSpec::Blend(vec![(4, 0.5), (5, 0.5)]));
        let w = merged.weights().unwrap();
        assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(w[4], 0.5);
    }

    #[test]
    fn names_in_blends() {
        let a = STYLES[25].name;
        let b = STYLES[3].name;
        let spec = parse(&format!("{a}:0.5,{b}:0.5")).unwrap();
        assert_eq!(spec, StyleSpec::Blend(vec![(3, 0.5), (25, 0.5)]));
        assert_eq!(spec.to_string(), "3:0.5,25:0.5");
    }

    #[test]
    fn display_round_trips() {
        for s in ["0", "25", "1:0.25,2:0.75", "3:0.7,12:0.3"] {
            let spec = parse(s).unwrap();
            assert_eq!(spec.to_string(), s);
            assert_eq!(parse(&spec.to_string()).unwrap(), spec);
        }
    }

    #[test]
    fn zero_weights_are_dropped() {
        assert_eq!(parse("3:1,4:0").unwrap(), StyleSpec::Blend(vec![(3, 1.0)]));
    }

    #[test]
    fn bad_specs_are_rejected_with_reasons() {
        assert!(matches!(
            parse("26"),
            Err(ModelError::StyleIndexOutOfRange { index: 26, max: 25 })
        ));
        match parse("starry-bleu") {
            Err(e @ ModelError::UnknownStyle { .. }) => {
                assert!(e.to_string().contains("did you mean `starry-blue`?"), "{e}");
                assert!(!e.to_string().contains(STYLES[0].name), "no list: {e}");
            }
            other => panic!("expected UnknownStyle, got {other:?}"),
        }
        match parse("qwxz") {
            Err(e @ ModelError::UnknownStyle { .. }) => {
                assert!(
                    !e.to_string().contains("did you mean"),
                    "nothing close: {e}"
                );
            }
            other => panic!("expected UnknownStyle, got {other:?}"),
        }
        assert_eq!(closest_name("Stary-Blue"), Some("starry-blue"));
        assert_eq!(closest_name("tapestri"), Some("tapestry"));
        assert!(matches!(
            parse("3:-1,4:2"),
            Err(ModelError::BadBlend { .. })
        ));
        assert!(matches!(parse("3:0,4:0"), Err(ModelError::BadBlend { .. })));
        assert!(matches!(parse("3:x"), Err(ModelError::BadBlend { .. })));
        assert!(matches!(parse("3:inf"), Err(ModelError::BadBlend { .. })));
        assert!(matches!(parse("3,,4"), Err(ModelError::BadBlend { .. })));
        assert!(matches!(parse(""), Err(ModelError::BadBlend { .. })));
        assert!(matches!(
            StyleSpec::blend(&[(1, 0.0)]),
            Err(ModelError::BadBlend { .. })
        ));
    }

    #[test]
    fn image_paths() {
        assert_eq!(
            parse("styles/starry.JPG").unwrap(),
            StyleSpec::Image(PathBuf::from("styles/starry.JPG"))
        );
        let file = std::env::temp_dir().join(format!("stylefleet-spec-{}", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        let spec = parse(file.to_str().unwrap()).unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(spec, StyleSpec::Image(file.clone()));
        assert_eq!(spec.to_string(), file.display().to_string());
    }
}
