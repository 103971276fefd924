/*!
`[flow] schedule`: when a registered flow runs by itself.

```toml
[flow]
name = "daily"
schedule = "0 2 * * *"        # cron: minute hour day-of-month month day-of-week
timezone = "Europe/Paris"     # an IANA zone; UTC by default
catchup = "latest"            # or "all": what to do with slots missed while down
```

A pattern has 5 fields, or 6 with seconds first (`"0,30 * * * * *"`: every 30 seconds), with
the usual `*`, lists, ranges, steps and names (`MON`, `JAN`), `L`, `W` and
`#`. A slot is one time the pattern names, in the flow's zone. Around a
daylight saving change a fixed-time pattern (`"30 2 * * *"`) fires once a
day: in a skipped hour it fires when the gap ends (03:00 for `"30 2 * * *"`
the night Paris goes from 02:00 to 03:00), in a repeated hour at the first
of the two. A pattern that repeats within the
hour (`"0,30 * * * *"`) follows the real clock: no slot in a skipped hour,
both passes of a repeated hour.

This module only computes slots; the coordinator node fires them (see
`conveyor_coordinator::schedules`).
*/

use std::str::FromStr;

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

use crate::diag::Tbl;

/// Most runs one catch-up fires for `catchup = "all"`: the latest slots
/// are kept, and the earlier ones are skipped (and logged), so that a long
/// downtime of a frequent schedule cannot flood the workers.
pub const MAX_CATCHUP_RUNS: usize = 1000;

/// What happens to slots missed while the coordinator was down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Catchup {
    /// One run, for the latest missed slot (the default).
    Latest,
    /// One run per missed slot, oldest first, at most [`MAX_CATCHUP_RUNS`].
    All,
}

impl Catchup {
    pub fn as_str(self) -> &'static str {
        match self {
            Catchup::Latest => "latest",
            Catchup::All => "all",
        }
    }
}

/// A parsed `[flow] schedule`, with its zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// The pattern as written.
    pub cron: String,
    /// The zone's IANA name, as written (`UTC` when not set).
    pub timezone: String,
    pub catchup: Catchup,
    pattern: Cron,
    zone: TimeZone,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        (&self.cron, &self.timezone, self.catchup) == (&other.cron, &other.timezone, other.catchup)
    }
}

/// A schedule that does not parse: the key at fault and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleError {
    pub key: &'static str,
    pub message: String,
}

/// Slots missed while the coordinator was down, to fire now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Missed {
    /// Slots to fire, oldest first, in ms since the epoch.
    pub fire: Vec<u64>,
    /// `catchup = "all"` found more than [`MAX_CATCHUP_RUNS`]: slots before
    /// the first of `fire` were skipped.
    pub truncated: bool,
}

impl Schedule {
    /// Parses `cron` (5 fields, or 6 with seconds) in `timezone` (UTC if
    /// none); a bad pattern and a bad zone are both reported.
    pub fn new(
        cron: &str,
        timezone: Option<&str>,
        catchup: Catchup,
    ) -> Result<Schedule, Vec<ScheduleError>> {
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let pattern = parser.parse(cron).map_err(|e| ScheduleError {
            key: "schedule",
            message: format!(
                "`{cron}` is not a cron pattern ({e}); expected 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first, e.g. \"0 2 * * *\""
            ),
        });
        let timezone = timezone.unwrap_or("UTC");
        let zone = TimeZone::get(timezone).map_err(|_| ScheduleError {
            key: "timezone",
            message: format!(
                "`{timezone}` is not a time zone of the IANA database, e.g. \"Europe/Paris\" or \"UTC\""
            ),
        });
        let (pattern, zone) = match (pattern, zone) {
            (Ok(p), Ok(z)) => (p, z),
            (p, z) => return Err(p.err().into_iter().chain(z.err()).collect()),
        };
        let schedule = Schedule {
            cron: cron.to_string(),
            timezone: timezone.to_string(),
            catchup,
            pattern,
            zone,
        };
        // Without a year field, a pattern that ever matches does so within
        // any four years (`29 2` is the rarest); start from a fixed instant
        // so that parsing does not depend on the clock.
        const Y2024_MS: u64 = 1_704_067_200_000;
        if schedule.next_after(Y2024_MS).is_none() {
            return Err(vec![ScheduleError {
                key: "schedule",
                message: format!("`{cron}` never fires (no date matches it)"),
            }]);
        }
        Ok(schedule)
    }

    fn zoned(&self, ms: u64) -> Option<Zoned> {
        let ms = i64::try_from(ms).ok()?;
        Some(
            Timestamp::from_millisecond(ms)
                .ok()?
                .to_zoned(self.zone.clone()),
        )
    }

    fn millis(z: &Zoned) -> Option<u64> {
        u64::try_from(z.timestamp().as_millisecond()).ok()
    }

    /// The first slot strictly after `after_ms`.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let from = self.zoned(after_ms)?;
        let next = self.pattern.find_next_occurrence(&from, false).ok()?;
        let ms = Self::millis(&next)?;
        // The pattern works on whole seconds: `after_ms` inside a matching
        // second must not return that second again.
        if ms > after_ms {
            Some(ms)
        } else {
            self.next_after(ms.checked_add(999)?)
        }
    }

    /// The latest slot at or before `at_ms`.
    pub fn latest_at_or_before(&self, at_ms: u64) -> Option<u64> {
        let at = self.zoned(at_ms)?;
        let prev = self.pattern.find_previous_occurrence(&at, true).ok()?;
        Self::millis(&prev).filter(|&ms| ms <= at_ms)
    }

    /// The slots in `(after_ms, now_ms]` to fire now, per [`Self::catchup`].
    ///
    /// Walks back from `now_ms`, so that a long downtime of a frequent
    /// schedule costs at most [`MAX_CATCHUP_RUNS`] steps, not one per slot.
    pub fn missed(&self, after_ms: u64, now_ms: u64) -> Missed {
        let wanted = match self.catchup {
            Catchup::Latest => 1,
            Catchup::All => MAX_CATCHUP_RUNS,
        };
        let mut fire = Vec::new();
        let mut at = now_ms;
        let mut truncated = false;
        while let Some(slot) = self.latest_at_or_before(at).filter(|&s| s > after_ms) {
            if fire.len() == wanted {
                truncated = self.catchup == Catchup::All;
                break;
            }
            fire.push(slot);
            match slot.checked_sub(1) {
                Some(before) => at = before,
                None => break,
            }
        }
        fire.reverse();
        Missed { fire, truncated }
    }

    /// `slot_ms` as RFC 3339 in the flow's zone, e.g.
    /// `2026-03-29T03:00:00+02:00`: the `slot` param of the run it starts.
    pub fn slot_text(&self, slot_ms: u64) -> String {
        match self.zoned(slot_ms) {
            Some(z) => z.timestamp().display_with_offset(z.offset()).to_string(),
            None => slot_ms.to_string(),
        }
    }
}

impl FromStr for Catchup {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "latest" => Ok(Catchup::Latest),
            "all" => Ok(Catchup::All),
            other => Err(format!(
                "unknown catch-up `{other}`; expected \"latest\" (one run for the latest missed slot) or \"all\" (one run per missed slot, at most {MAX_CATCHUP_RUNS})"
            )),
        }
    }
}

/// Reads `schedule`, `timezone` and `catchup` of the `[flow]` table; each
/// problem is reported on its own key.
pub(crate) fn read_schedule(flow: &mut Tbl) -> Option<Schedule> {
    let cron = flow.str("schedule");
    let timezone = flow.str("timezone");
    let catchup = match flow.str("catchup").map(|c| c.parse::<Catchup>()) {
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            flow.error("catchup", e);
            None
        }
        None => None,
    };
    let Some(cron) = cron else {
        for key in ["timezone", "catchup"] {
            if flow.has(key) && !flow.has("schedule") {
                flow.error(key, "is set but the flow has no `schedule`");
            }
        }
        return None;
    };
    match Schedule::new(
        &cron,
        timezone.as_deref(),
        catchup.unwrap_or(Catchup::Latest),
    ) {
        Ok(s) => Some(s),
        Err(problems) => {
            for e in problems {
                flow.error(e.key, e.message);
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Milliseconds since the epoch of an RFC 3339 instant.
    fn ms(text: &str) -> u64 {
        text.parse::<Timestamp>().unwrap().as_millisecond() as u64
    }

    fn paris(cron: &str) -> Schedule {
        Schedule::new(cron, Some("Europe/Paris"), Catchup::Latest).unwrap()
    }

    #[test]
    fn five_and_six_field_patterns_parse_and_others_are_refused() {
        let s = Schedule::new("0 2 * * *", None, Catchup::Latest).unwrap();
        assert_eq!(s.timezone, "UTC");
        assert_eq!(
            s.next_after(ms("2026-11-30T09:00:00Z")),
            Some(ms("2026-12-01T02:00:00Z"))
        );
        let every_second = Schedule::new("* * * * * *", None, Catchup::All).unwrap();
        assert_eq!(
            every_second.next_after(ms("2026-11-30T09:00:00.250Z")),
            Some(ms("2026-11-30T09:00:01Z"))
        );
        assert_eq!(
            every_second.next_after(ms("2026-11-30T09:00:01Z")),
            Some(ms("2026-11-30T09:00:02Z"))
        );
        let weekdays = Schedule::new("30 8 * * MON-FRI", None, Catchup::Latest).unwrap();
        // 2026-11-28 is a Saturday.
        assert_eq!(
            weekdays.next_after(ms("2026-11-28T00:00:00Z")),
            Some(ms("2026-11-30T08:30:00Z"))
        );
        for bad in [
            "",
            "0 2 * *",
            "0 0 2 * * * 2026",
            "61 * * * *",
            "0 2 * * FUNDAY",
        ] {
            let e = &Schedule::new(bad, None, Catchup::Latest).unwrap_err()[0];
            assert_eq!(e.key, "schedule", "{bad}: {e:?}");
            assert!(e.message.contains("not a cron pattern"), "{bad}: {e:?}");
        }
        let never = &Schedule::new("0 0 30 2 *", None, Catchup::Latest).unwrap_err()[0];
        assert!(never.message.contains("never fires"), "{never:?}");
        let zone =
            &Schedule::new("0 2 * * *", Some("Mars/Olympus"), Catchup::Latest).unwrap_err()[0];
        assert_eq!(zone.key, "timezone");
        assert!(zone.message.contains("`Mars/Olympus`"), "{zone:?}");
    }

    #[test]
    fn a_fixed_time_fires_once_a_day_across_both_dst_changes_in_its_zone() {
        let s = paris("30 2 * * *");
        // Spring forward: 02:30 does not exist on 2026-03-29 in Paris; the
        // slot is where the gap ends, 03:00 CEST (01:00 UTC).
        let spring = s.next_after(ms("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(spring, ms("2026-03-29T01:00:00Z"));
        assert_eq!(s.slot_text(spring), "2026-03-29T03:00:00+02:00");
        assert_eq!(s.next_after(spring), Some(ms("2026-03-30T00:30:00Z")));
        // Fall back: 02:30 happens twice on 2026-10-25; it fires at the
        // first (CEST, 00:30 UTC), not again an hour later.
        let fall = s.next_after(ms("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(fall, ms("2026-10-25T00:30:00Z"));
        assert_eq!(s.slot_text(fall), "2026-10-25T02:30:00+02:00");
        assert_eq!(s.next_after(fall), Some(ms("2026-10-26T01:30:00Z")));
        // Winter time: 02:30 CET is 01:30 UTC.
        assert_eq!(
            s.slot_text(ms("2026-10-26T01:30:00Z")),
            "2026-10-26T02:30:00+01:00"
        );
    }

    #[test]
    fn an_interval_pattern_follows_the_real_clock_across_dst() {
        let s = paris("0 * * * *");
        // Spring forward: 01:00 CET is followed by 03:00 CEST, one hour later.
        let t = ms("2026-03-29T00:00:00Z");
        assert_eq!(s.next_after(t), Some(ms("2026-03-29T01:00:00Z")));
        // Fall back: 02:00 CEST and 02:00 CET are both slots, an hour apart.
        let first = s.next_after(ms("2026-10-24T23:30:00Z")).unwrap();
        assert_eq!(first, ms("2026-10-25T00:00:00Z"));
        let second = s.next_after(first).unwrap();
        assert_eq!(second, ms("2026-10-25T01:00:00Z"));
        assert_eq!(s.slot_text(second), "2026-10-25T02:00:00+01:00");
    }

    #[test]
    fn catchup_latest_fires_one_slot_and_all_fires_each_within_the_bound() {
        let mut s = Schedule::new("*/10 * * * * *", None, Catchup::Latest).unwrap();
        let down = ms("2026-11-30T09:00:00Z");
        let up = ms("2026-11-30T09:00:35.500Z");
        assert_eq!(
            s.missed(down, up),
            Missed {
                fire: vec![ms("2026-11-30T09:00:30Z")],
                truncated: false
            }
        );
        // Nothing missed: the last fired slot is the latest.
        assert_eq!(s.missed(ms("2026-11-30T09:00:30Z"), up), Missed::default());
        s.catchup = Catchup::All;
        assert_eq!(
            s.missed(down, up).fire,
            [
                ms("2026-11-30T09:00:10Z"),
                ms("2026-11-30T09:00:20Z"),
                ms("2026-11-30T09:00:30Z")
            ]
        );
        // A slot exactly at `now` is due; the last fired one is not again.
        assert_eq!(
            s.missed(ms("2026-11-30T09:00:10Z"), ms("2026-11-30T09:00:20Z"))
                .fire,
            [ms("2026-11-30T09:00:20Z")]
        );
        // A day down at one slot per second: the latest 1000 slots, oldest
        // first, and the rest skipped.
        let every_second = Schedule::new("* * * * * *", None, Catchup::All).unwrap();
        let now = down + 86_400_000;
        let missed = every_second.missed(down, now);
        assert!(missed.truncated);
        assert_eq!(missed.fire.len(), MAX_CATCHUP_RUNS);
        assert_eq!(missed.fire.last(), Some(&now));
        assert_eq!(missed.fire[0], now - 999_000);
        assert!(missed.fire.windows(2).all(|w| w[1] - w[0] == 1000));
    }

    #[test]
    fn a_flow_reports_each_schedule_problem_with_its_key_and_line() {
        let tasks = "[tasks.e]\nkind = \"extract\"\npath = \"in.csv\"\n";
        let parse = |flow: &str| {
            crate::FlowSpec::parse(
                "f.toml",
                &format!("{flow}{tasks}"),
                std::path::Path::new("/d"),
            )
        };
        let ok = parse("[flow]\nname = \"f\"\nschedule = \"0 2 * * *\"\ntimezone = \"Europe/Paris\"\ncatchup = \"all\"\n").unwrap();
        let s = ok.schedule.unwrap();
        assert_eq!(
            (s.cron.as_str(), s.timezone.as_str(), s.catchup),
            ("0 2 * * *", "Europe/Paris", Catchup::All)
        );
        assert!(parse("[flow]\nname = \"f\"\n").unwrap().schedule.is_none());
        let err = parse("[flow]\nname = \"f\"\nschedule = \"0 25 * * *\"\ntimezone = \"Europe/Pariss\"\ncatchup = \"some\"\n").unwrap_err();
        let found = err.keys_and_lines();
        assert_eq!(
            found,
            [
                ("flow.schedule", Some(3)),
                ("flow.timezone", Some(4)),
                ("flow.catchup", Some(5))
            ],
            "{err}"
        );
        let err =
            parse("[flow]\nname = \"f\"\nschedule = \"0 2 * * *\"\ntimezone = \"Europe/Pariss\"\n")
                .unwrap_err();
        assert_eq!(err.problems[0].key, "flow.timezone", "{err}");
        assert_eq!(err.problems[0].line, Some(4), "{err}");
        let err = parse("[flow]\nname = \"f\"\ntimezone = \"UTC\"\n").unwrap_err();
        assert!(err.to_string().contains("has no `schedule`"), "{err}");
    }

    #[test]
    fn a_param_cannot_set_the_schedule() {
        let text = "[flow]\nname = \"f\"\nschedule = \"{{ params.cron }}\"\n[params]\ncron = { default = \"0 2 * * *\" }\n[tasks.e]\nkind = \"extract\"\npath = \"in.csv\"\n";
        let err = crate::FlowSpec::parse("f.toml", text, std::path::Path::new("/d")).unwrap_err();
        assert_eq!(
            (err.problems[0].key.as_str(), err.problems[0].line),
            ("flow.schedule", Some(3)),
            "{err}"
        );
    }
}
