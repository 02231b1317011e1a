#![allow(clippy::unwrap_used)]
//! Looking before processing, through the real CLI: the labelled style sheet of a picture and of
//! a frame of the user's own video, the dry run of `process`, and the shell completions and man
//! pages generated from the command line's own definition.

mod support;

use std::process::{Command, Output};

fn stylefleet<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_stylefleet"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("STYLEFLEET_DATA")
        .env_remove("STYLEFLEET_STORE")
        .env_remove("STYLEFLEET_QUEUE")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[track_caller]
fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

#[cfg(feature = "style")]
mod sheet {
    use std::path::Path;

    use super::*;
    use crate::support::clips;
    use stylefleet_models::{Frame, read_image};

    // The geometry of a sheet of 64x36 tiles: 6 columns and 5 rows of 27 tiles, 4-pixel
    // gutters, and a caption band of three 10-pixel lines plus 2 pixels of margin (the longest
    // label, "16 blue-orange-hatch", wraps onto three lines of 8 characters).
    const TILE: (u32, u32) = (64, 36);
    const CAPTION: u32 = 32;
    const SHEET: (u32, u32) = (6 * (64 + 4) + 4, 5 * (36 + CAPTION + 4) + 4);

    fn origin(n: u32) -> (u32, u32) {
        (
            4 + (n % 6) * (TILE.0 + 4),
            4 + (n / 6) * (TILE.1 + CAPTION + 4),
        )
    }

    fn pixels(f: &Frame, x0: u32, y0: u32, w: u32, h: u32) -> Vec<[u8; 3]> {
        let mut out = Vec::new();
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                let at = ((y * f.width + x) * 3) as usize;
                out.push([f.data[at], f.data[at + 1], f.data[at + 2]]);
            }
        }
        out
    }

    fn caption(f: &Frame, n: u32) -> Vec<[u8; 3]> {
        let (x, y) = origin(n);
        pixels(f, x, y + TILE.1, TILE.0, CAPTION)
    }

    /// Checks the grid, that every caption holds black text on white, and that no two
    /// neighbouring captions are the same picture.
    fn assert_labelled_grid(sheet: &Frame) {
        assert_eq!((sheet.width, sheet.height), SHEET);
        let white = [255u8; 3];
        for n in 0..27 {
            let c = caption(sheet, n);
            let black = c.iter().filter(|p| **p == [0, 0, 0]).count();
            assert!(black > 20, "caption {n} has {black} text pixels");
            assert!(
                c.iter().all(|p| *p == white || *p == [0, 0, 0]),
                "caption {n} is not black text on white"
            );
            if n > 0 {
                assert_ne!(c, caption(sheet, n - 1), "captions {n} and {}", n - 1);
            }
            let (x, y) = origin(n);
            let tile = pixels(sheet, x, y, TILE.0, TILE.1);
            assert!(
                tile.iter().filter(|p| **p != white).count() > tile.len() / 2,
                "tile {n} is blank"
            );
        }
        // The gutter left of the first column and the empty cells of the last row are white.
        assert!(
            pixels(sheet, 0, 0, 4, sheet.height)
                .iter()
                .all(|p| *p == white)
        );
        let (x, y) = origin(27);
        let rest = pixels(sheet, x, y, sheet.width - x, TILE.1 + CAPTION);
        assert!(rest.iter().all(|p| *p == white));
    }

    #[test]
    fn a_sheet_of_a_picture_has_a_labelled_tile_per_style_at_the_size_asked() {
        let dir = tempfile::tempdir().unwrap();
        let picture = clips::png_image(dir.path());
        let out = dir.path().join("sheet.png");
        let run = stylefleet([
            "styles".as_ref(),
            "--sheet".as_ref(),
            picture.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
            "--size".as_ref(),
            "64x36".as_ref(),
        ]);
        assert_ok("styles --sheet", &run);
        assert_eq!(stdout(&run).trim(), out.to_str().unwrap());
        assert!(
            stderr(&run).contains("27 tiles of 64x36"),
            "{}",
            stderr(&run)
        );
        let sheet = read_image(&out).unwrap();
        assert_labelled_grid(&sheet);
        // The first tile is the picture itself (64x48 scaled to 64x48 then cropped to 64x36),
        // not a styled one: its corner is testsrc2's, and differs from style 0's.
        let (x, y) = origin(0);
        let (x1, y1) = origin(1);
        assert_ne!(
            pixels(&sheet, x, y, TILE.0, TILE.1),
            pixels(&sheet, x1, y1, TILE.0, TILE.1)
        );
    }

    #[test]
    fn a_sheet_of_a_video_takes_the_frame_asked_and_refuses_a_time_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        // 160x90, 25 frames at 25 fps: one second.
        let clip = clips::cfr_with_aac(dir.path(), 160, 90, 25, 25);
        let out = dir.path().join("sheet.png");
        let sheet_at = |at: &str| {
            stylefleet([
                "styles".as_ref(),
                "--sheet".as_ref(),
                clip.as_os_str(),
                "-o".as_ref(),
                out.as_os_str(),
                "--size".as_ref(),
                // A width: the height follows the video's 16:9.
                "64".as_ref(),
                "--at".as_ref(),
                at.as_ref(),
            ])
        };
        let run = sheet_at("0.5");
        assert_ok("styles --sheet VIDEO --at 0.5", &run);
        assert!(
            stderr(&run).contains("27 tiles of 64x36 from frame 12 (0.48 s)"),
            "{}",
            stderr(&run)
        );
        let first = read_image(&out).unwrap();
        assert_labelled_grid(&first);
        // testsrc2 moves: another time is another picture.
        std::fs::remove_file(&out).unwrap();
        assert_ok("styles --sheet VIDEO --at 0", &sheet_at("0"));
        let other = read_image(&out).unwrap();
        assert_ne!(pixels(&first, 4, 4, 64, 36), pixels(&other, 4, 4, 64, 36));

        std::fs::remove_file(&out).unwrap();
        let late = sheet_at("7");
        assert!(!late.status.success());
        assert!(
            stderr(&late).contains("7 s is past the end of the video, which is 1.00 s long"),
            "{}",
            stderr(&late)
        );
        assert!(!out.exists(), "a refused sheet wrote {}", out.display());
    }

    #[test]
    fn sheet_options_without_a_sheet_are_refused() {
        for args in [
            &["styles", "-o", "x.png"][..],
            &["styles", "--size", "720p"],
            &["styles", "--at", "3"],
        ] {
            let run = stylefleet(args);
            assert_eq!(run.status.code(), Some(2), "{args:?}: {}", stderr(&run));
            assert!(
                stderr(&run).contains("--sheet"),
                "{args:?}: {}",
                stderr(&run)
            );
        }
        let run = stylefleet(["styles", "--sheet", "x.png", "-o", "y.png", "--size", "big"]);
        assert_eq!(run.status.code(), Some(2));
        assert!(stderr(&run).contains("WxH"), "{}", stderr(&run));
    }

    #[test]
    fn at_is_for_videos() {
        let dir = tempfile::tempdir().unwrap();
        let picture = clips::png_image(dir.path());
        let out = dir.path().join("sheet.png");
        let run = stylefleet([
            "styles".as_ref(),
            "--sheet".as_ref(),
            picture.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
            "--at".as_ref(),
            "1".as_ref(),
        ]);
        assert!(!run.status.success());
        assert!(stderr(&run).contains("is a picture"), "{}", stderr(&run));
        assert!(!Path::new(&out).exists());
    }
}

#[cfg(feature = "style")]
mod dry_run {
    use super::*;
    use crate::support::clips;

    #[test]
    fn a_dry_run_plans_measures_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // 96x64, 40 frames at 25 fps.
        let clip = clips::cfr_with_aac(dir.path(), 96, 64, 40, 25);
        let data = dir.path().join("data");
        let out = dir.path().join("out.mp4");
        let before: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        let run = stylefleet([
            "process".as_ref(),
            clip.as_os_str(),
            "--style".as_ref(),
            "starry-blue".as_ref(),
            "--batch-frames".as_ref(),
            "16".as_ref(),
            "--data".as_ref(),
            data.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
            "--dry-run".as_ref(),
        ]);
        assert_ok("process --dry-run", &run);
        let text = stdout(&run);
        assert!(text.contains("96x64, 40 frames, 1.60 s, h264"), "{text}");
        // Three batches of at most 16 would leave one of the two default workers styling the
        // last alone: four make two whole rounds.
        assert!(
            text.contains("4 batches of 10 frames (at most 16)"),
            "{text}"
        );
        assert!(text.contains("a frame at 96x64 on the CPU"), "{text}");
        // The measured cost and the estimates are numbers above zero.
        let number_after = |key: &str| -> f64 {
            let at = text
                .find(key)
                .unwrap_or_else(|| panic!("{key:?} in {text}"))
                + key.len();
            text[at..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!(number_after("model") > 0.0, "{text}");
        assert!(number_after("disk     about") > 0.0, "{text}");
        assert!(text.contains("keyframe of"), "{text}");
        // Nothing written: no data folder, no output, nothing new beside the clip.
        assert!(!data.exists(), "the dry run created {}", data.display());
        assert!(!out.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), before.len());
    }

    #[test]
    fn a_dry_run_refuses_what_the_run_would_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let clip = clips::cfr_with_aac(dir.path(), 96, 64, 10, 25);
        let data = dir.path().join("data");
        let refuse = |extra: &[&str]| {
            let mut args: Vec<std::ffi::OsString> = vec![
                "process".into(),
                clip.clone().into(),
                "--data".into(),
                data.clone().into(),
                "--dry-run".into(),
            ];
            args.extend(extra.iter().map(Into::into));
            let run = stylefleet(args);
            assert!(!run.status.success(), "{extra:?} was accepted");
            stderr(&run)
        };
        assert!(refuse(&["--style", "starry-bleu"]).contains("starry-bleu"));
        assert!(refuse(&["--style", "3", "--strength", "2"]).contains("strength"));
        assert!(refuse(&["--style", "3", "--max-side", "32"]).contains("limit"));
        let audio = clips::audio_only(dir.path());
        let run = stylefleet([
            "process".as_ref(),
            audio.as_os_str(),
            "-s".as_ref(),
            "3".as_ref(),
            "--data".as_ref(),
            data.as_os_str(),
            "--dry-run".as_ref(),
        ]);
        assert!(!run.status.success());
        assert!(
            !data.exists(),
            "a refused dry run created {}",
            data.display()
        );
    }
}

mod docs {
    use super::*;

    #[test]
    fn bash_completion_knows_every_subcommand() {
        let run = stylefleet(["completions", "bash"]);
        assert_ok("completions bash", &run);
        let script = stdout(&run);
        assert!(
            script.contains("complete -F"),
            "not a bash completion script"
        );
        for sub in [
            "process",
            "up",
            "worker",
            "status",
            "dlq",
            "style-image",
            "sas",
            "styles",
            "completions",
            "man",
        ] {
            assert!(script.contains(sub), "{sub} is not completed");
        }
        assert!(script.contains("--dry-run") && script.contains("--sheet"));
        for shell in ["zsh", "fish", "elvish", "powershell"] {
            let run = stylefleet(["completions", shell]);
            assert_ok(shell, &run);
            assert!(stdout(&run).contains("process"), "{shell}");
        }
        assert_eq!(stylefleet(["completions", "tcsh"]).status.code(), Some(2));
    }

    #[test]
    fn man_writes_a_page_per_subcommand_that_man_reads() {
        let run = stylefleet(["man"]);
        assert_ok("man", &run);
        assert!(
            stdout(&run).starts_with(".ie \\n(.g .ds Aq"),
            "{}",
            stdout(&run)
        );
        assert!(stdout(&run).contains(".TH stylefleet 1"));

        let dir = tempfile::tempdir().unwrap();
        let pages = dir.path().join("man1");
        let run = stylefleet(["man".as_ref(), "--dir".as_ref(), pages.as_os_str()]);
        assert_ok("man --dir", &run);
        let listed: Vec<String> = stdout(&run).lines().map(str::to_owned).collect();
        for name in [
            "stylefleet",
            "stylefleet-process",
            "stylefleet-styles",
            "stylefleet-dlq",
            "stylefleet-completions",
            "stylefleet-man",
        ] {
            let page = pages.join(format!("{name}.1"));
            assert!(
                listed.contains(&page.display().to_string()),
                "{name}.1 not listed in {listed:?}"
            );
            let text = std::fs::read_to_string(&page).unwrap();
            assert!(
                text.contains(&format!(".TH {name} 1")),
                "{name}.1 has no title header"
            );
        }
        let process = std::fs::read_to_string(pages.join("stylefleet-process.1")).unwrap();
        assert!(process.contains("dry\\-run"), "{process}");
        // `man -l` formats the page where man is installed (it is not on minimal systems).
        if let Ok(out) = Command::new("man")
            .args(["-l", "-P", "cat"])
            .arg(pages.join("stylefleet-process.1"))
            .env("MANWIDTH", "100")
            .output()
        {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let shown = String::from_utf8_lossy(&out.stdout);
            assert!(shown.contains("--dry-run"), "{shown}");
        }
    }
}
