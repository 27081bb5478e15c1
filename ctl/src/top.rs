//! `yardctl top`: a live view of the busiest listeners, backends and
//! workers, from successive `stats` samples (rate = delta / elapsed).
//!
//! Drawn with ratatui, whose terminal keeps the last frame and writes only
//! the cells that changed, so the view refreshes without flicker. The
//! terminal is put back (raw mode off, main screen, cursor shown) by a
//! guard, whichever way the loop ends.

use std::io::{self, IsTerminal};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::rates;
use anyhow::{bail, Context, Result};
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::{cursor, execute, terminal};
use ratatui::backend::CrosstermBackend;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};
use ratatui::{Frame, Terminal};
use switchyard_proto::client;
use switchyard_proto::{Request, Response, StatsReport};

/// Shortest refresh: each sample asks every worker for its counters.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Per-second rates of one listener or backend over the last interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Rate {
    /// `namespace/gateway/listener`.
    pub listener: String,
    /// For a listener `PROTO address:port`, for a backend `address:port`.
    pub what: String,
    pub packets: f64,
    pub bytes: f64,
    pub flows: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRate {
    pub queue: u32,
    pub rx_packets: f64,
    pub tx_packets: f64,
    pub drops: f64,
    /// The reason dropping the most over the interval.
    pub top_drop: Option<String>,
}

/// Busiest first; ties in name order so rows do not swap between frames.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rates {
    pub listeners: Vec<Rate>,
    pub backends: Vec<Rate>,
    pub workers: Vec<WorkerRate>,
    pub seconds: f64,
}

/// The rates between two samples taken `elapsed` apart (computed by
/// `rates`, as `stats --interval` computes them), busiest first.
pub fn busiest(before: &StatsReport, now: &StatsReport, elapsed: Duration) -> Rates {
    let seconds = elapsed.as_secs_f64();
    let r = rates::rates(before, now, seconds);
    let mut listeners: Vec<Rate> = r
        .listeners
        .iter()
        .map(|l| Rate {
            listener: l.listener.clone(),
            what: format!("{} {}", l.protocol, l.vip),
            packets: l.rate.packets_per_sec,
            bytes: l.rate.bytes_per_sec,
            flows: l.rate.flows_per_sec,
        })
        .collect();
    let mut backends: Vec<Rate> = r
        .backends
        .iter()
        .map(|b| Rate {
            listener: b.listener.clone(),
            what: b.backend.clone(),
            packets: b.rate.packets_per_sec,
            bytes: b.rate.bytes_per_sec,
            flows: b.rate.flows_per_sec,
        })
        .collect();
    let mut workers: Vec<WorkerRate> = r
        .workers
        .iter()
        .map(|w| WorkerRate {
            queue: w.queue,
            rx_packets: w.rx_packets_per_sec,
            tx_packets: w.tx_packets_per_sec,
            drops: w.drops_per_sec,
            top_drop: w
                .drop_reasons_per_sec
                .iter()
                .max_by(|a, b| a.1.total_cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .map(|(reason, _)| reason.clone()),
        })
        .collect();
    let busiest = |a: &Rate, b: &Rate| {
        b.packets
            .total_cmp(&a.packets)
            .then_with(|| a.listener.cmp(&b.listener))
            .then_with(|| a.what.cmp(&b.what))
    };
    listeners.sort_by(busiest);
    backends.sort_by(busiest);
    workers.sort_by(|a, b| {
        (b.rx_packets + b.tx_packets)
            .total_cmp(&(a.rx_packets + a.tx_packets))
            .then_with(|| a.queue.cmp(&b.queue))
    });
    Rates {
        listeners,
        backends,
        workers,
        seconds,
    }
}

/// `1234567.0` as `1.23M`: four significant characters fit a narrow column.
pub fn human(rate: f64) -> String {
    let (value, suffix) = if rate >= 1e9 {
        (rate / 1e9, "G")
    } else if rate >= 1e6 {
        (rate / 1e6, "M")
    } else if rate >= 1e3 {
        (rate / 1e3, "k")
    } else {
        return format!("{rate:.0}");
    };
    if value >= 100.0 {
        format!("{value:.0}{suffix}")
    } else if value >= 10.0 {
        format!("{value:.1}{suffix}")
    } else {
        format!("{value:.2}{suffix}")
    }
}

/// Everything one frame shows.
pub struct View<'a> {
    pub socket: &'a str,
    pub interval: Duration,
    /// None until two samples are in.
    pub rates: Option<&'a Rates>,
    /// Why the last sample failed, shown until one succeeds.
    pub problem: Option<&'a str>,
}

pub fn draw(frame: &mut Frame, view: &View) {
    let workers = view.rates.map_or(0, |r| r.workers.len()) as u16;
    let [header, listeners, backends, workers_area] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Fill(1),
        Constraint::Fill(1),
        Constraint::Length(workers.saturating_add(3)),
    ])
    .areas(frame.area());
    draw_header(frame, header, view);
    let Some(rates) = view.rates else {
        return;
    };
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let numeric = |r: &Rate| vec![human(r.packets), human(r.bytes), format!("{:.1}", r.flows)];
    let rows = rates.listeners.iter().map(|r| {
        let mut cells = vec![r.listener.clone(), r.what.clone()];
        cells.extend(numeric(r));
        Row::new(cells)
    });
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Fill(2),
                Constraint::Fill(1),
                Constraint::Length(9),
                Constraint::Length(8),
                Constraint::Length(8),
            ],
        )
        .header(Row::new(["LISTENER", "VIP", "PACKETS/S", "BYTES/S", "FLOWS/S"]).style(bold))
        .block(Block::default().borders(Borders::ALL).title(" Listeners ")),
        listeners,
    );
    let rows = rates.backends.iter().map(|r| {
        let mut cells = vec![r.what.clone(), r.listener.clone()];
        cells.extend(numeric(r));
        Row::new(cells)
    });
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Fill(1),
                Constraint::Fill(2),
                Constraint::Length(9),
                Constraint::Length(8),
                Constraint::Length(8),
            ],
        )
        .header(Row::new(["BACKEND", "LISTENER", "PACKETS/S", "BYTES/S", "FLOWS/S"]).style(bold))
        .block(Block::default().borders(Borders::ALL).title(" Backends ")),
        backends,
    );
    let rows = rates.workers.iter().map(|w| {
        Row::new(vec![
            w.queue.to_string(),
            human(w.rx_packets),
            human(w.tx_packets),
            human(w.drops),
            w.top_drop.clone().unwrap_or_default(),
        ])
    });
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(10),
                Constraint::Length(12),
                Constraint::Length(12),
                Constraint::Length(9),
                Constraint::Fill(1),
            ],
        )
        .header(
            Row::new([
                "QUEUE",
                "RX PACKETS/S",
                "TX PACKETS/S",
                "DROPS/S",
                "TOP DROP REASON",
            ])
            .style(bold),
        )
        .block(Block::default().borders(Borders::ALL).title(" Workers ")),
        workers_area,
    );
}

fn draw_header(frame: &mut Frame, area: Rect, view: &View) {
    let title = format!(
        "yardctl top  {}  every {:.1}s  (q quits)",
        view.socket,
        view.interval.as_secs_f64()
    );
    let status = match (view.problem, view.rates) {
        (Some(problem), _) => format!("last sample failed: {problem}"),
        (None, None) => "waiting for a second sample".to_owned(),
        (None, Some(r)) => format!("rates over the last {:.2}s, busiest first", r.seconds),
    };
    frame.render_widget(
        Paragraph::new(vec![
            Line::styled(title, Style::default().add_modifier(Modifier::BOLD)),
            Line::raw(status),
        ]),
        area,
    );
}

/// Puts the terminal back when dropped, also on an error or a panic
/// unwinding through `run`.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> Result<Self> {
        terminal::enable_raw_mode().context("switching the terminal to raw mode")?;
        // From here on, a failure must still undo raw mode: the guard does.
        let guard = TerminalGuard;
        // Cleared here rather than by `Terminal::clear`, which asks the
        // terminal for the cursor position and fails where none answers.
        execute!(
            io::stdout(),
            terminal::EnterAlternateScreen,
            terminal::Clear(terminal::ClearType::All),
            cursor::Hide
        )
        .context("switching to the alternate screen")?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = execute!(io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

struct Sample {
    at: Instant,
    stats: StatsReport,
}

fn sample(socket: &Path) -> Result<Sample> {
    let at = Instant::now();
    match client::request(socket, &Request::Stats)? {
        Response::Stats(stats) => Ok(Sample { at, stats }),
        _ => bail!("the daemon answered a stats request with something else"),
    }
}

fn quits(key: &KeyEvent) -> bool {
    key.kind == KeyEventKind::Press
        && match key.code {
            KeyCode::Char('q') | KeyCode::Esc => true,
            // Raw mode delivers Ctrl-C as a key, not as SIGINT.
            KeyCode::Char('c') => key.modifiers.contains(KeyModifiers::CONTROL),
            _ => false,
        }
}

pub fn run(socket: &Path, interval: Duration) -> Result<()> {
    if !io::stdout().is_terminal() {
        bail!(
            "yardctl top draws a live view and needs a terminal, but stdout is not one; \
             for output to a file or a script use `yardctl stats` (add `-o json` to parse it)"
        );
    }
    // Fail on a missing daemon before taking over the screen, so the error
    // stays readable.
    let mut previous = sample(socket)?;
    let _guard = TerminalGuard::enter()?;
    let mut term =
        Terminal::new(CrosstermBackend::new(io::stdout())).context("setting up the terminal")?;
    let socket_name = socket.display().to_string();
    let mut rates: Option<Rates> = None;
    let mut problem: Option<String> = None;
    let mut next = previous.at + interval;
    loop {
        term.draw(|frame| {
            draw(
                frame,
                &View {
                    socket: &socket_name,
                    interval,
                    rates: rates.as_ref(),
                    problem: problem.as_deref(),
                },
            )
        })
        .context("drawing")?;
        let wait = next.saturating_duration_since(Instant::now());
        // Any event (a resize, a key) redraws; only a due sample samples.
        if event::poll(wait).context("reading the terminal")? {
            if let Event::Key(key) = event::read().context("reading the terminal")? {
                if quits(&key) {
                    return Ok(());
                }
            }
        }
        if Instant::now() >= next {
            match sample(socket) {
                Ok(now) => {
                    rates = Some(busiest(
                        &previous.stats,
                        &now.stats,
                        now.at.duration_since(previous.at),
                    ));
                    previous = now;
                    problem = None;
                }
                Err(err) => problem = Some(format!("{err:#}")),
            }
            next = Instant::now() + interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use ratatui::backend::TestBackend;
    use switchyard_proto::{Counters, ListenerStats, WorkerStats};

    use super::*;

    fn listener(name: &str, packets: u64, bytes: u64, flows: u64) -> ListenerStats {
        ListenerStats {
            listener: name.into(),
            protocol: "TCP".into(),
            vip: "198.18.100.10:80".into(),
            counters: Counters {
                packets,
                bytes,
                flows,
            },
            drops: Default::default(),
            ..ListenerStats::default()
        }
    }

    fn worker(queue: u32, rx: u64, drops: &[(&str, u64)]) -> WorkerStats {
        WorkerStats {
            queue,
            rx_packets: rx,
            tx_packets: rx,
            drops: drops.iter().map(|(r, c)| ((*r).to_owned(), *c)).collect(),
            ..WorkerStats::default()
        }
    }

    fn samples() -> (StatsReport, StatsReport) {
        let before = StatsReport {
            listeners: vec![
                listener("demo/edge/web", 1000, 64_000, 10),
                listener("demo/edge/dns", 0, 0, 0),
            ],
            workers: vec![worker(0, 100, &[("no_backend", 5)]), worker(1, 100, &[])],
            ..StatsReport::default()
        };
        let after = StatsReport {
            listeners: vec![
                listener("demo/edge/web", 1000, 64_000, 10),
                listener("demo/edge/dns", 5000, 320_000, 40),
            ],
            workers: vec![
                worker(0, 300, &[("no_backend", 25), ("not_ours", 1)]),
                worker(1, 4100, &[]),
            ],
            ..StatsReport::default()
        };
        (before, after)
    }

    #[test]
    fn rates_are_deltas_over_elapsed_busiest_first() {
        let (before, after) = samples();
        let r = busiest(&before, &after, Duration::from_secs(2));
        assert_eq!(r.listeners[0].listener, "demo/edge/dns");
        assert_eq!(r.listeners[0].packets, 2500.0);
        assert_eq!(r.listeners[0].bytes, 160_000.0);
        assert_eq!(r.listeners[0].flows, 20.0);
        assert_eq!(r.listeners[1].packets, 0.0);
        assert_eq!(r.workers[0].queue, 1);
        assert_eq!(r.workers[0].rx_packets, 2000.0);
        assert_eq!(r.workers[1].drops, 10.5);
        assert_eq!(r.workers[1].top_drop.as_deref(), Some("no_backend"));
        assert_eq!(r.workers[0].top_drop, None);
    }

    #[test]
    fn a_counter_that_went_backwards_restarted_from_zero() {
        let before = StatsReport {
            listeners: vec![listener("demo/edge/web", 9000, 0, 0)],
            ..StatsReport::default()
        };
        let after = StatsReport {
            listeners: vec![listener("demo/edge/web", 300, 0, 0)],
            ..StatsReport::default()
        };
        let r = busiest(&before, &after, Duration::from_secs(1));
        assert_eq!(r.listeners[0].packets, 300.0);
    }

    #[test]
    fn no_time_elapsed_gives_zero_rates_not_infinities() {
        let (before, after) = samples();
        let r = busiest(&before, &after, Duration::ZERO);
        assert!(r.listeners.iter().all(|l| l.packets == 0.0));
    }

    #[test]
    fn human_rates_keep_four_significant_characters() {
        assert_eq!(human(0.0), "0");
        assert_eq!(human(999.4), "999");
        assert_eq!(human(1234.0), "1.23k");
        assert_eq!(human(45_600.0), "45.6k");
        assert_eq!(human(2_500_000.0), "2.50M");
        assert_eq!(human(123_000_000.0), "123M");
    }

    fn render(width: u16, height: u16, rates: Option<&Rates>) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal
            .draw(|frame| {
                draw(
                    frame,
                    &View {
                        socket: "/run/switchyard/control.sock",
                        interval: Duration::from_secs(1),
                        rates,
                        problem: None,
                    },
                )
            })
            .unwrap();
        let buffer = terminal.backend().buffer();
        buffer
            .content()
            .chunks(buffer.area.width.max(1) as usize)
            .map(|row| row.iter().map(|cell| cell.symbol()).collect::<String>() + "\n")
            .collect()
    }

    #[test]
    fn frame_lists_the_busiest_listener_first_with_its_rate() {
        let (before, after) = samples();
        let r = busiest(&before, &after, Duration::from_secs(2));
        let screen = render(100, 24, Some(&r));
        let dns = screen.find("demo/edge/dns").expect(&screen);
        let web = screen.find("demo/edge/web").expect(&screen);
        assert!(dns < web, "{screen}");
        let dns_row = screen[dns..].lines().next().unwrap();
        assert!(dns_row.contains("2.50k"), "{dns_row}");
        assert!(dns_row.contains("160k"), "{dns_row}");
        assert!(screen.lines().any(|l| l.starts_with("│1 ")), "{screen}");
        assert!(
            screen
                .lines()
                .any(|l| l.starts_with("│0 ") && l.contains("no_backend")),
            "{screen}"
        );
        assert!(screen.contains("no_backend"), "{screen}");
    }

    #[test]
    fn before_the_second_sample_the_frame_says_so() {
        let screen = render(80, 10, None);
        assert!(screen.contains("waiting for a second sample"), "{screen}");
    }

    #[test]
    fn tiny_terminals_do_not_panic() {
        let (before, after) = samples();
        let r = busiest(&before, &after, Duration::from_secs(1));
        for (width, height) in [(0, 0), (1, 1), (5, 2), (20, 3), (200, 4)] {
            render(width, height, Some(&r));
        }
    }
}
