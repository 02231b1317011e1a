//! What a job asks of the temporal stabilisation: its strength and every threshold, recorded in
//! the manifest (and so in the job id) so that a job stitches the same way wherever and
//! whenever its aggregator runs.

use serde::{Deserialize, Serialize};

use super::flow::DisParams;

/// The default strength: a reliable pixel keeps 0.9 of the warped previous output and takes 0.1
/// of the new styled frame (`scripts/bench-temporal.sh` measures the trade-off).
pub const DEFAULT_STRENGTH: f32 = 1.0;

/// Temporal stabilisation of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TemporalSettings {
    /// 0..=1: how much of the warped previous output a reliable pixel keeps. The new styled
    /// frame's weight is `1 - 0.9 * strength` (0.1 at full strength).
    pub strength: f32,
    /// The flow is computed on the source's luma halved until it is at most this wide.
    pub flow_width: u32,
    /// The patch search.
    pub flow: DisParams,
    /// Photometric weight `exp(-(d / sigma)^2)` of a luma difference `d` (0..255) between the
    /// source and the warped previous source.
    pub photometric_sigma: f32,
    /// A pixel whose 3x3 neighbourhood changed by less than this (luma 0..255) takes the previous
    /// output as it is, without resampling.
    pub static_threshold: f32,
    /// Restart the filter when more than this fraction of the pixels is unreliable (a cut).
    pub cut_fraction: f32,
    /// Restart the filter when the mean luma jumps by more than this (a cut or a flash).
    pub cut_luma_jump: f32,
    /// Restart the filter after a flat previous frame (luma standard deviation below this): the
    /// black end of a fade holds no strokes worth keeping.
    pub flat_std: f32,
}

impl Default for TemporalSettings {
    fn default() -> Self {
        Self {
            strength: DEFAULT_STRENGTH,
            flow_width: 360,
            flow: DisParams::default(),
            photometric_sigma: 12.0,
            static_threshold: 16.0,
            cut_fraction: 0.6,
            cut_luma_jump: 12.0,
            flat_std: 4.0,
        }
    }
}

impl TemporalSettings {
    /// The weight of the new styled frame on a fully reliable pixel.
    pub fn new_frame_weight(&self) -> f32 {
        1.0 - 0.9 * self.strength.clamp(0.0, 1.0)
    }

    /// Parses the command-line and environment form: `off` (or `0`), `on` (the default
    /// strength), or a strength in `0..=1`.
    pub fn parse_option(text: &str) -> Result<Option<TemporalSettings>, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "off" | "false" | "no" | "none" => Ok(None),
            "on" | "true" | "yes" | "" => Ok(Some(TemporalSettings::default())),
            other => match other.parse::<f32>() {
                Ok(0.0) => Ok(None),
                Ok(s) if (0.0..=1.0).contains(&s) => Ok(Some(TemporalSettings {
                    strength: s,
                    ..TemporalSettings::default()
                })),
                _ => Err(format!(
                    "temporal stabilisation must be `on`, `off` or a strength between 0 and 1, got {text:?}"
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_parses() {
        assert_eq!(TemporalSettings::parse_option("off"), Ok(None));
        assert_eq!(TemporalSettings::parse_option("0"), Ok(None));
        assert_eq!(
            TemporalSettings::parse_option("on"),
            Ok(Some(TemporalSettings::default()))
        );
        let half = TemporalSettings::parse_option("0.5").ok().flatten();
        assert_eq!(half.map(|t| t.strength), Some(0.5));
        assert!(TemporalSettings::parse_option("1.5").is_err());
        assert!(TemporalSettings::parse_option("lots").is_err());
    }
}
