//! Exact time arithmetic: rational time bases, and conversions that never go through floats.
//!
//! Frame timestamps are integers in a stream's time base. Comparing them across files, or
//! turning them into the microseconds ffmpeg's command line speaks, is done here with 128-bit
//! integer arithmetic so that no drift can creep in over a long video.

use serde::{Deserialize, Serialize};

/// Microseconds per second: the unit of ffmpeg's command-line times (`AV_TIME_BASE`).
pub const MICROS: i64 = 1_000_000;

/// A rational number such as a time base (`1/12800`) or a frame rate (`30000/1001`).
///
/// ffprobe reports `0/0` for unknown rates; such a value is kept as is and is not
/// [`valid`](Self::is_valid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rational {
    /// Numerator.
    pub num: i64,
    /// Denominator.
    pub den: i64,
}

impl Rational {
    /// Builds `num/den` as given.
    pub const fn new(num: i64, den: i64) -> Self {
        Self { num, den }
    }

    /// Parses ffprobe's `"num/den"` (or a bare integer).
    pub fn parse(text: &str) -> Option<Self> {
        match text.split_once('/') {
            Some((num, den)) => Some(Self::new(
                num.trim().parse().ok()?,
                den.trim().parse().ok()?,
            )),
            None => Some(Self::new(text.trim().parse().ok()?, 1)),
        }
    }

    /// Whether this is a positive, finite number.
    pub fn is_valid(self) -> bool {
        self.num > 0 && self.den > 0
    }

    /// The same number in lowest terms (unchanged when not valid).
    pub fn reduced(self) -> Self {
        if !self.is_valid() {
            return self;
        }
        let g = gcd(self.num, self.den);
        Self::new(self.num / g, self.den / g)
    }

    /// An approximation, for display and for limits only.
    pub fn as_f64(self) -> f64 {
        if self.den == 0 {
            0.0
        } else {
            self.num as f64 / self.den as f64
        }
    }
}

impl std::fmt::Display for Rational {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.abs().max(1)
}

/// Whether `a` ticks of `tb_a` and `b` ticks of `tb_b` are the same instant, exactly.
pub fn same_instant(a: i64, tb_a: Rational, b: i64, tb_b: Rational) -> bool {
    i128::from(a) * i128::from(tb_a.num) * i128::from(tb_b.den)
        == i128::from(b) * i128::from(tb_b.num) * i128::from(tb_a.den)
}

/// `ticks` of `tb` in microseconds, rounded down (towards negative infinity).
pub fn micros_floor(ticks: i64, tb: Rational) -> i64 {
    let (n, d) = scaled(ticks, tb);
    clamp(n.div_euclid(d))
}

/// `ticks` of `tb` in microseconds, rounded to the nearest (halves away from zero, as
/// ffmpeg's `av_rescale_q` does).
pub fn micros_round(ticks: i64, tb: Rational) -> i64 {
    let (n, d) = scaled(ticks, tb);
    let half = d / 2;
    clamp(if n >= 0 {
        (n + half) / d
    } else {
        -((-n + half) / d)
    })
}

/// The difference `a - b` in seconds, where each is ticks in its own time base, as an exact
/// fraction `(numerator, denominator)` with a positive denominator.
pub fn seconds_between(a: i64, tb_a: Rational, b: i64, tb_b: Rational) -> (i128, i128) {
    let num = i128::from(a) * i128::from(tb_a.num) * i128::from(tb_b.den)
        - i128::from(b) * i128::from(tb_b.num) * i128::from(tb_a.den);
    (num, i128::from(tb_a.den) * i128::from(tb_b.den))
}

/// Formats microseconds as seconds with six decimals (`-1.5` -> `"-0.000002"` style), the
/// form ffmpeg parses back to the same microsecond.
pub fn format_micros(us: i64) -> String {
    let sign = if us < 0 { "-" } else { "" };
    let abs = us.unsigned_abs();
    format!("{sign}{}.{:06}", abs / MICROS as u64, abs % MICROS as u64)
}

/// Parses ffprobe's decimal seconds (`"0.021333"`, `"-0.5"`) into microseconds exactly.
pub fn parse_micros(text: &str) -> Option<i64> {
    let text = text.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let frac: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().ok()?
    };
    let us = whole.checked_mul(MICROS)?.checked_add(frac)?;
    Some(if negative { -us } else { us })
}

/// `ticks * tb` as the fraction `n / d` of microseconds, with `d > 0`.
fn scaled(ticks: i64, tb: Rational) -> (i128, i128) {
    let n = i128::from(ticks) * i128::from(tb.num) * i128::from(MICROS);
    let d = i128::from(tb.den);
    if d < 0 { (-n, -d) } else { (n, d.max(1)) }
}

fn clamp(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_reduces() {
        assert_eq!(Rational::parse("1/12800"), Some(Rational::new(1, 12800)));
        assert_eq!(Rational::parse("0/0"), Some(Rational::new(0, 0)));
        assert!(!Rational::new(0, 0).is_valid());
        assert_eq!(
            Rational::parse("30000/1001").map(Rational::reduced),
            Some(Rational::new(30000, 1001))
        );
        assert_eq!(
            Rational::new(2002, 60000).reduced(),
            Rational::new(1001, 30000)
        );
        assert_eq!(Rational::parse("x/1"), None);
    }

    #[test]
    fn compares_across_time_bases_exactly() {
        // 1001/30000 s is 3003 ticks of 1/90000.
        assert!(same_instant(
            1,
            Rational::new(1001, 30000),
            3003,
            Rational::new(1, 90000)
        ));
        assert!(!same_instant(
            1,
            Rational::new(1001, 30000),
            3004,
            Rational::new(1, 90000)
        ));
        // Far into a long video, floats would already disagree.
        let t = 10_000_000_007;
        assert!(same_instant(
            t,
            Rational::new(1, 30000),
            t * 3,
            Rational::new(1, 90000)
        ));
    }

    #[test]
    fn converts_to_micros() {
        let tb = Rational::new(1, 30000);
        assert_eq!(micros_floor(1, tb), 33);
        assert_eq!(micros_round(1, tb), 33);
        assert_eq!(micros_round(2, tb), 67);
        assert_eq!(micros_floor(-1, tb), -34);
        assert_eq!(micros_round(-2, tb), -67);
        assert_eq!(format_micros(-1_500_002), "-1.500002");
        assert_eq!(format_micros(670_000), "0.670000");
        assert_eq!(parse_micros("-0.021333"), Some(-21_333));
        assert_eq!(parse_micros("5.28"), Some(5_280_000));
        assert_eq!(parse_micros("1.2345678"), None);
        assert_eq!(
            seconds_between(3, Rational::new(1, 3), 1, Rational::new(1, 2)),
            (3 * 2 - 3, 6)
        );
    }
}
