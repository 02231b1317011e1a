//! The page: server-rendered HTML (maud escapes every value put into it, so a file name such as
//! `<script>.mp4` shows as text), a stylesheet and a short script, all inline: no build step, no
//! request leaves the machine.
//!
//! The parts that change ([`Fragments`]) are rendered here both for the first load and for each
//! poll; the script swaps a part in only when its version (a hash of its HTML) changed, so a
//! button is not replaced under the pointer while nothing moved.

use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::state::{JobRow, LetterRow, MAX_JOBS, Snapshot};
use crate::job::{JobId, JobState};

/// How long a reason is in the table; the full text unfolds below it.
const SHORT_REASON: usize = 140;

/// The parts of the page that polls refresh, by element id.
#[derive(Debug, Clone, Serialize)]
pub struct Fragments {
    /// `#workers`: the worker count.
    pub workers: Fragment,
    /// `#jobs`: the job rows.
    pub jobs: Fragment,
    /// `#letters`: the dead-letter rows.
    pub letters: Fragment,
}

/// One part: its HTML and a version that changes when the HTML does.
#[derive(Debug, Clone, Serialize)]
pub struct Fragment {
    /// The inner HTML of the element.
    pub html: String,
    /// A hash of `html`.
    pub version: String,
}

impl Fragment {
    fn new(markup: Markup) -> Self {
        let html = markup.into_string();
        let digest = Sha256::digest(html.as_bytes());
        Self {
            version: digest[..8].iter().map(|b| format!("{b:02x}")).collect(),
            html,
        }
    }
}

/// Renders the changing parts.
pub fn fragments(snapshot: &Snapshot) -> Fragments {
    Fragments {
        workers: Fragment::new(workers(snapshot)),
        jobs: Fragment::new(jobs(snapshot)),
        letters: Fragment::new(letters(&snapshot.dead_letters)),
    }
}

/// Renders the whole page.
pub fn page(snapshot: &Snapshot) -> String {
    let parts = fragments(snapshot);
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "stylefleet" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { "stylefleet" }
                    span #workers data-version=(parts.workers.version) {
                        (PreEscaped(&parts.workers.html))
                    }
                    span #updated role="status" {}
                }
                section {
                    h2 { "Jobs" }
                    table {
                        thead {
                            tr {
                                th { "Frames (source · styled)" }
                                th { "Video" }
                                th { "State" }
                                th { "Progress" }
                                th { "Failure" }
                            }
                        }
                        tbody #jobs data-version=(parts.jobs.version) {
                            (PreEscaped(&parts.jobs.html))
                        }
                    }
                }
                section {
                    h2 { "Dead letters" }
                    form #replay-filter {
                        label {
                            "Queue "
                            select name="queue" {
                                option value="" { "both" }
                                option value="batches" { "batches" }
                                option value="stitch" { "stitch" }
                            }
                        }
                        label { "Job " input name="job" type="text" size="24" placeholder="job id"; }
                        label {
                            "Reason "
                            input name="reason" type="text" size="24" placeholder="text in the reason";
                        }
                        button #replay-matching type="submit" { "Replay matching…" }
                    }
                    div #confirm hidden {
                        p #confirm-text {}
                        button #confirm-replay type="button" { "Replay" }
                        " "
                        button #cancel-replay type="button" { "Cancel" }
                    }
                    p #replay-result role="status" {}
                    table {
                        thead {
                            tr {
                                th { "Queue" }
                                th { "Message" }
                                th { "Reason" }
                                th { "Deliveries" }
                                th { "Dead-lettered" }
                                th {}
                            }
                        }
                        tbody #letters data-version=(parts.letters.version) {
                            (PreEscaped(&parts.letters.html))
                        }
                    }
                }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
    .into_string()
}

fn workers(snapshot: &Snapshot) -> Markup {
    let w = snapshot.workers;
    html! {
        "workers " b #worker-count { (w.running) } " of " (w.max)
        " · backlog " (w.backlog)
    }
}

fn jobs(snapshot: &Snapshot) -> Markup {
    html! {
        @if snapshot.jobs.is_empty() {
            tr { td.empty colspan="5" { "No jobs yet: drop a video into input/<style>/." } }
        }
        @for row in &snapshot.jobs {
            (job(row))
        }
        @if snapshot.jobs_total > MAX_JOBS {
            tr {
                td.empty colspan="5" {
                    "The newest " (MAX_JOBS) " of " (snapshot.jobs_total) " jobs; "
                    code { "stylefleet status" } " lists them all."
                }
            }
        }
    }
}

fn job(row: &JobRow) -> Markup {
    let v = &row.view;
    let name = v.source.rsplit('/').next().unwrap_or(&v.source);
    let state = v.state.to_string();
    html! {
        tr.job data-job=(v.job.as_str()) data-state=(state) {
            td.thumbs {
                @if let Some(batch) = row.thumbnail {
                    @let base = format!("thumbs/{}/{batch}", v.job);
                    img.source src=(format!("{base}/source.jpg")) alt="source frame";
                    img.styled src=(format!("{base}/styled.jpg")) alt="styled frame";
                } @else {
                    span.none { "no styled frame yet" }
                }
            }
            td {
                div.name title=(v.source) { (name) }
                div.sub {
                    @if let Some(style) = &row.style { "style " (style) " · " }
                    "job " code { (v.job.as_str()) }
                }
                @if let Some(output) = &v.output {
                    div.sub { "→ " (output) }
                }
            }
            td { span class=(format!("state {state}")) { (state) } }
            td {
                progress max=(v.frames_total.max(1)) value=(v.frames_done) {}
                div.sub {
                    (v.batches_done) "/" (v.batches_total) " batches · "
                    (v.frames_done) "/" (v.frames_total) " frames"
                    @if v.fps > 0.0 && v.state != JobState::Failed { " · " (format!("{:.1}", v.fps)) " fps" }
                }
            }
            td.reason {
                @if let Some(reason) = &v.reason {
                    @if reason.chars().count() > SHORT_REASON {
                        details {
                            summary { (shorten(reason)) }
                            pre { (reason) }
                        }
                    } @else {
                        (reason)
                    }
                }
            }
        }
    }
}

fn letters(letters: &[LetterRow]) -> Markup {
    html! {
        @if letters.is_empty() {
            tr { td.empty colspan="6" { "No dead letters." } }
        }
        @for l in letters {
            tr.letter data-id=(l.listed.id) {
                td { (l.listed.queue) }
                td {
                    code title=(l.listed.id) { (l.listed.id) }
                    @if let Some(batch) = l.batch { div.sub { "batch " (batch) } }
                }
                td.reason {
                    b { (l.listed.reason) }
                    @if !l.listed.description.is_empty() {
                        ": "
                        @if l.listed.description.chars().count() > SHORT_REASON {
                            details {
                                summary { (shorten(&l.listed.description)) }
                                pre { (l.listed.description) }
                            }
                        } @else {
                            (l.listed.description)
                        }
                    }
                }
                td { (l.listed.delivery_count) }
                td { (age(l.listed.age_secs)) }
                td {
                    button.replay type="button"
                        data-queue=(l.listed.queue)
                        data-job=[l.job.as_ref().map(JobId::as_str)]
                        data-id=(l.listed.id) { "Replay…" }
                }
            }
        }
    }
}

/// The first characters of a long text, cut at a character boundary.
fn shorten(text: &str) -> String {
    let cut: String = text.chars().take(SHORT_REASON).collect();
    format!("{}…", cut.trim_end())
}

/// An age coarse enough not to change at every poll (the rows are swapped only when they change).
fn age(secs: u64) -> String {
    match secs {
        0..60 => "under a minute ago".to_owned(),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86_400 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    }
}

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1.5em 2em; color: #222; background: #fafafa; }
header { display: flex; align-items: baseline; gap: 1.5em; border-bottom: 1px solid #ddd; }
h1 { font-size: 1.4em; margin: .6em 0; }
h2 { font-size: 1.1em; margin: 1.2em 0 .4em; }
#updated { color: #777; margin-left: auto; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; vertical-align: top; padding: .35em .6em; border-bottom: 1px solid #eee; }
th { font-weight: 600; color: #555; border-bottom: 1px solid #ccc; }
td.thumbs { white-space: nowrap; }
td.thumbs img { height: 68px; margin-right: 4px; border: 1px solid #ccc; background: #eee; }
.none, .empty, .sub { color: #777; font-size: .9em; }
.name { font-weight: 600; overflow-wrap: anywhere; }
.state { padding: .1em .5em; border-radius: 1em; background: #eee; }
.state.done { background: #d6f5d6; } .state.failed { background: #f8d4d4; }
.state.running, .state.stitching { background: #dbe8fb; }
progress { width: 10em; }
td.reason { max-width: 34em; overflow-wrap: anywhere; }
pre { white-space: pre-wrap; font-size: .85em; }
form { margin: .4em 0; } form label { margin-right: 1em; }
#confirm { border: 1px solid #c90; background: #fff8e0; padding: .2em 1em .8em; margin: .5em 0; }
#replay-result:empty { display: none; }
"#;

const SCRIPT: &str = r#"
"use strict";
const $ = (id) => document.getElementById(id);
let pending = null;

async function refresh() {
  try {
    const r = await fetch("api/state", { cache: "no-store" });
    if (!r.ok) throw new Error(r.status + " " + r.statusText);
    const s = await r.json();
    for (const [id, part] of Object.entries(s.html)) {
      const el = $(id);
      if (el && el.dataset.version !== part.version) {
        el.innerHTML = part.html;
        el.dataset.version = part.version;
      }
    }
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    $("updated").textContent = "cannot reach the fleet (" + e.message + "); retrying";
  }
}

async function replay(filter, dryRun) {
  const r = await fetch("api/dlq/replay", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ ...filter, dry_run: dryRun }),
  });
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function describe(filter) {
  const parts = [];
  if (filter.id) parts.push("message " + filter.id);
  else {
    if (filter.queue) parts.push("queue " + filter.queue);
    if (filter.job) parts.push("job " + filter.job);
    if (filter.reason) parts.push("reason containing \u201c" + filter.reason + "\u201d");
  }
  return parts.length ? " (" + parts.join(", ") + ")" : " (every dead letter)";
}

async function ask(filter) {
  $("replay-result").textContent = "";
  try {
    const counted = await replay(filter, true);
    if (counted.matched === 0) {
      $("replay-result").textContent = "No dead letter matches" + describe(filter) + ".";
      return;
    }
    pending = filter;
    const n = counted.matched;
    $("confirm-text").textContent = "Replay " + n + " dead-lettered message" + (n === 1 ? "" : "s") +
      describe(filter) + "? Each goes back to its queue with its id, and its job's failure is cleared.";
    $("confirm").hidden = false;
    $("confirm-replay").focus();
  } catch (e) {
    $("replay-result").textContent = "Cannot count the matching dead letters: " + e.message;
  }
}

document.addEventListener("click", (e) => {
  const button = e.target.closest("button.replay");
  if (button) ask({ queue: button.dataset.queue, job: button.dataset.job || "", id: button.dataset.id });
});
$("replay-filter").addEventListener("submit", (e) => {
  e.preventDefault();
  const f = e.target.elements;
  ask({ queue: f.queue.value, job: f.job.value.trim(), reason: f.reason.value.trim() });
});
$("cancel-replay").addEventListener("click", () => { pending = null; $("confirm").hidden = true; });
$("confirm-replay").addEventListener("click", async () => {
  const filter = pending;
  pending = null;
  $("confirm").hidden = true;
  if (!filter) return;
  try {
    const done = await replay(filter, false);
    $("replay-result").textContent = "Replayed " + done.acted + " of " + done.matched + describe(filter) + ".";
  } catch (e) {
    $("replay-result").textContent = "Replay failed: " + e.message;
  }
  refresh();
});

refresh();
setInterval(refresh, 1500);
"#;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::dlq::Listed;
    use crate::fleet::WorkerCount;
    use crate::inspect::JobView;

    const HOSTILE: &str = r#"<script>alert("x")</script> & 'q'.mp4"#;

    fn hostile_snapshot() -> Snapshot {
        let job = JobId::parse(&"a".repeat(16)).unwrap();
        Snapshot {
            workers: WorkerCount {
                running: 1,
                max: 2,
                backlog: 3,
            },
            jobs: vec![JobRow {
                view: JobView {
                    job: job.clone(),
                    source: format!("input/0/{HOSTILE}"),
                    state: JobState::Failed,
                    batches_done: 1,
                    batches_total: 2,
                    frames_done: 4,
                    frames_total: 8,
                    fps: 1.5,
                    reason: Some(format!("batch 1: {HOSTILE} {}", "long ".repeat(40))),
                    output: None,
                    timings: Default::default(),
                    created_at: 1.0,
                    style: HOSTILE.to_owned(),
                    input: HOSTILE.to_owned(),
                    named_output: None,
                    work_secs: 2.0,
                },
                style: Some(HOSTILE.to_owned()),
                created_at: 1.0,
                thumbnail: Some(0),
            }],
            jobs_total: 1,
            dead_letters: vec![LetterRow {
                listed: Listed {
                    queue: "batches".into(),
                    sequence: 1,
                    id: format!("{job}:1\"><script>"),
                    reason: HOSTILE.into(),
                    description: HOSTILE.into(),
                    delivery_count: 1,
                    age_secs: 75,
                    body: String::new(),
                },
                job: Some(job),
                batch: Some(1),
            }],
        }
    }

    #[test]
    fn every_value_is_escaped() {
        let html = page(&hostile_snapshot());
        // The page's own script is the only one.
        assert_eq!(html.matches("<script>").count(), 1, "{html}");
        assert!(!html.contains("alert(\"x\")"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; 'q'.mp4"),
            "{html}"
        );
        // Attribute values cannot be closed early either.
        assert!(html.contains(r#"data-id=""#), "{html}");
        assert!(!html.contains(r#":1"><script>"#), "{html}");
    }

    #[test]
    fn the_page_shows_jobs_letters_and_workers() {
        let html = page(&hostile_snapshot());
        assert!(
            html.contains(r#"<b id="worker-count">1</b> of 2"#),
            "{html}"
        );
        assert!(html.contains(r#"data-state="failed""#), "{html}");
        assert!(html.contains(&format!("thumbs/{}/0/styled.jpg", "a".repeat(16))));
        assert!(
            html.contains("<details><summary>batch 1:"),
            "long reasons fold: {html}"
        );
        assert!(html.contains("1 min ago"), "{html}");
        assert!(html.contains(r#"class="replay""#), "{html}");
    }

    #[test]
    fn a_fragment_changes_version_with_its_html() {
        let mut snapshot = hostile_snapshot();
        let before = fragments(&snapshot);
        assert_eq!(before.jobs.version, fragments(&snapshot).jobs.version);
        snapshot.jobs[0].view.frames_done = 5;
        let after = fragments(&snapshot);
        assert_ne!(before.jobs.version, after.jobs.version);
        assert_eq!(before.letters.version, after.letters.version);
    }

    #[test]
    fn ages_are_coarse() {
        assert_eq!(age(5), "under a minute ago");
        assert_eq!(age(150), "2 min ago");
        assert_eq!(age(7300), "2 h ago");
        assert_eq!(age(200_000), "2 days ago");
    }
}
