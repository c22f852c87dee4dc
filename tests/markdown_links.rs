//! Every relative link of the repository's Markdown files, and every alert's `runbook_url`, points
//! at a file that exists and, with an anchor, at a heading of that file. Moving a section between
//! pages (or renaming a heading) breaks links silently otherwise.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

/// The repository's root directory.
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Markdown files under `dir`, skipping build output and Git's own directory.
fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = entry.file_name();
        if entry.file_type().unwrap().is_dir() {
            if name != "target" && name != ".git" {
                markdown_files(&path, out);
            }
        } else if path.extension().is_some_and(|ext| ext == "md") {
            out.push(path);
        }
    }
}

/// The opening of a fenced code block: its character and length.
fn fence_opening(line: &str) -> Option<(char, usize)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let ch = rest.chars().next()?;
    if ch != '`' && ch != '~' {
        return None;
    }
    let len = rest.chars().take_while(|&c| c == ch).count();
    (len >= 3).then_some((ch, len))
}

/// The file's lines, with fenced code blocks (fences included) blanked, so that neither their
/// `#` comments count as headings nor their brackets as links. Line numbers stay the same.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut open: Option<(char, usize)> = None;
    text.lines()
        .map(|line| match open {
            Some((ch, len)) => {
                let trimmed = line.trim();
                if trimmed.chars().take_while(|&c| c == ch).count() >= len
                    && trimmed.chars().all(|c| c == ch)
                {
                    open = None;
                }
                ""
            }
            None => match fence_opening(line) {
                Some(fence) => {
                    open = Some(fence);
                    ""
                }
                None => line,
            },
        })
        .collect()
}

/// The text of an ATX heading line (`## Text ##`), or None.
fn heading_text(line: &str) -> Option<&str> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let level = rest.chars().take_while(|&c| c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &rest[level..];
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
        return None;
    }
    let rest = rest.trim();
    // A closing sequence of `#` counts only after a space.
    let without_closing = rest.trim_end_matches('#');
    if without_closing.is_empty() || without_closing.ends_with(' ') {
        Some(without_closing.trim_end())
    } else {
        Some(rest)
    }
}

/// GitHub's anchor of a heading's text: links reduced to their text, lower case, punctuation
/// dropped except `-` and `_`, each space a `-`.
fn slug(heading: &str) -> String {
    let chars: Vec<char> = heading.chars().collect();
    let mut visible = String::new();
    let mut i = 0;
    while i < chars.len() {
        // `[text](target)`: keep the text, drop the target.
        if chars[i] == ']'
            && chars.get(i + 1) == Some(&'(')
            && let Some(close) = chars[i + 1..].iter().position(|&c| c == ')')
        {
            i += close + 2;
            continue;
        }
        visible.push(chars[i]);
        i += 1;
    }
    visible
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown text's headings, outside code blocks, with GitHub's `-1`, `-2`, …
/// for repeated ones.
fn anchors(text: &str) -> HashSet<String> {
    let mut used = HashSet::new();
    for line in prose_lines(text) {
        let Some(heading) = heading_text(line) else {
            continue;
        };
        let base = slug(heading);
        let mut anchor = base.clone();
        let mut n = 1;
        while used.contains(&anchor) {
            anchor = format!("{base}-{n}");
            n += 1;
        }
        used.insert(anchor);
    }
    used
}

/// For each character of a paragraph, whether it is inside an inline code span (backticks
/// included). A run of backticks opens a span only if an equally long run closes it.
fn code_span_mask(chars: &[char]) -> Vec<bool> {
    let mut mask = vec![false; chars.len()];
    let run_at = |i: usize| chars[i..].iter().take_while(|&&c| c == '`').count();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            i += 1;
            continue;
        }
        let len = run_at(i);
        let mut j = i + len;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let run = run_at(j);
                if run == len {
                    close = Some(j + run);
                    break;
                }
                j += run;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                mask[i..end].iter_mut().for_each(|m| *m = true);
                i = end;
            }
            None => i += len,
        }
    }
    mask
}

/// The destinations of the inline links `[text](destination)` (and images) of a Markdown text,
/// outside code blocks and code spans, with their 1-based line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let lines = prose_lines(text);
    let mut found = Vec::new();
    let mut start = 0;
    // Paragraph by paragraph: a code span may continue on the next line, never past a blank one.
    while start < lines.len() {
        if lines[start].trim().is_empty() {
            start += 1;
            continue;
        }
        let end = (start..lines.len())
            .find(|&i| lines[i].trim().is_empty())
            .unwrap_or(lines.len());
        let mut chars = Vec::new();
        let mut line_of = Vec::new();
        for (n, line) in lines.iter().enumerate().take(end).skip(start) {
            for c in line.chars().chain(['\n']) {
                chars.push(c);
                line_of.push(n + 1);
            }
        }
        found.extend(paragraph_links(&chars, &line_of));
        start = end;
    }
    found
}

/// The link destinations of one paragraph (see `links`).
fn paragraph_links(chars: &[char], line_of: &[usize]) -> Vec<(usize, String)> {
    let code = code_span_mask(chars);
    let plain = |i: usize| !code[i] && (i == 0 || chars[i - 1] != '\\');
    let mut found = Vec::new();
    for open in 0..chars.len() {
        if chars[open] != '[' || !plain(open) {
            continue;
        }
        // The matching `]`, then `(` at once, then the matching `)`.
        let mut depth = 0;
        let Some(close) = (open..chars.len()).find(|&i| {
            if plain(i) && chars[i] == '[' {
                depth += 1;
            } else if plain(i) && chars[i] == ']' {
                depth -= 1;
            }
            depth == 0
        }) else {
            continue;
        };
        if chars.get(close + 1) != Some(&'(') {
            continue;
        }
        let mut depth = 0;
        let Some(end) = (close + 1..chars.len()).find(|&i| {
            if chars[i] == '(' {
                depth += 1;
            } else if chars[i] == ')' {
                depth -= 1;
            }
            depth == 0
        }) else {
            continue;
        };
        let inside: String = chars[close + 2..end].iter().collect();
        // The destination, without an optional title after it.
        let destination = inside.split_whitespace().next().unwrap_or("");
        let destination = destination.trim_start_matches('<').trim_end_matches('>');
        found.push((line_of[open], destination.to_string()));
    }
    found
}

/// `%xx` escapes of a link decoded.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = s
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `path` with `.` and `..` resolved lexically, or None when `..` climbs above its start.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// Checks links against the repository's files, remembering each Markdown file's anchors.
struct Checker {
    root: PathBuf,
    anchors: HashMap<PathBuf, HashSet<String>>,
}

impl Checker {
    fn new(root: PathBuf) -> Self {
        Checker {
            root,
            anchors: HashMap::new(),
        }
    }

    /// Why `path#anchor` does not resolve, `path` being relative to the repository's root
    /// (empty: `from` itself), or None when it does.
    fn problem(&mut self, from: &Path, path: &str, anchor: Option<&str>) -> Option<String> {
        let relative = if path.is_empty() {
            from.to_path_buf()
        } else if let Some(from_root) = path.strip_prefix('/') {
            PathBuf::from(percent_decode(from_root))
        } else {
            from.parent()
                .unwrap_or(Path::new(""))
                .join(percent_decode(path))
        };
        let Some(relative) = normalize(&relative) else {
            return Some("the path leaves the repository".to_string());
        };
        let target = self.root.join(&relative);
        if !target.exists() {
            return Some(format!("{} does not exist", relative.display()));
        }
        let anchor = anchor?;
        if target.extension().is_none_or(|ext| ext != "md") {
            return Some(format!(
                "an anchor on {}, which is not Markdown",
                relative.display()
            ));
        }
        let known = self
            .anchors
            .entry(relative.clone())
            .or_insert_with(|| anchors(&fs::read_to_string(&target).unwrap()));
        let anchor = percent_decode(anchor);
        (!known.contains(&anchor)).then(|| {
            format!(
                "{} has no heading with anchor #{anchor}",
                relative.display()
            )
        })
    }
}

/// Splits `path#anchor`.
fn split_anchor(destination: &str) -> (&str, Option<&str>) {
    match destination.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (destination, None),
    }
}

#[test]
fn every_relative_link_of_the_markdown_files_resolves() {
    let root = repo_root();
    let mut files = Vec::new();
    markdown_files(&root, &mut files);
    files.sort();
    let relative: Vec<PathBuf> = files
        .iter()
        .map(|f| f.strip_prefix(&root).unwrap().to_path_buf())
        .collect();
    for expected in [
        "README.md",
        "BENCHMARKS.md",
        "docs/configuration.md",
        "docs/metrics.md",
        "docs/operations.md",
        "docs/architecture.md",
    ] {
        assert!(
            relative.contains(&PathBuf::from(expected)),
            "{expected} not found among {relative:?}"
        );
    }

    let mut checker = Checker::new(root.clone());
    let mut problems = Vec::new();
    let mut checked = 0;
    let mut with_anchor = 0;
    for file in &relative {
        let text = fs::read_to_string(root.join(file)).unwrap();
        for (line, destination) in links(&text) {
            // Links to other sites are not this test's business.
            if destination.contains("://") || destination.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = split_anchor(&destination);
            with_anchor += usize::from(anchor.is_some());
            if let Some(problem) = checker.problem(file, path, anchor) {
                problems.push(format!(
                    "{}:{line}: ({destination}): {problem}",
                    file.display()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
    // The README's map alone links every page's sections: a parser that finds none is broken.
    assert!(checked >= 50, "only {checked} relative links found");
    assert!(
        with_anchor >= 40,
        "only {with_anchor} links with an anchor found"
    );
}

/// The repository path and anchor of a `runbook_url`: relative to the repository's root, or an
/// absolute URL of a file in a repository's web view (`…/blob/<branch>/<path>#anchor`).
fn runbook_target(url: &str) -> Result<(String, Option<String>), String> {
    let path = if url.contains("://") {
        let (_, after_blob) = url
            .split_once("/blob/")
            .ok_or_else(|| "an absolute URL without /blob/<branch>/".to_string())?;
        let (_, path) = after_blob
            .split_once('/')
            .ok_or_else(|| "no path after /blob/<branch>".to_string())?;
        path
    } else {
        url
    };
    let (path, anchor) = split_anchor(path);
    Ok((path.to_string(), anchor.map(str::to_string)))
}

#[test]
fn every_runbook_url_points_at_a_heading() {
    let root = repo_root();
    let mut rule_files = vec![
        PathBuf::from("config/prometheus/alerts.yml"),
        PathBuf::from("config/kubernetes/prometheusrule.yaml"),
    ];
    let mut unit_tests: Vec<PathBuf> = fs::read_dir(root.join("tests/prometheus"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yml"))
        .map(|path| path.strip_prefix(&root).unwrap().to_path_buf())
        .collect();
    unit_tests.sort();
    rule_files.extend(unit_tests);

    let mut checker = Checker::new(root.clone());
    let mut problems = Vec::new();
    for file in &rule_files {
        let text = fs::read_to_string(root.join(file)).unwrap();
        let mut urls = 0;
        for (n, line) in text.lines().enumerate() {
            let Some((_, value)) = line.split_once("runbook_url:") else {
                continue;
            };
            urls += 1;
            let url = value.trim().trim_matches('"').trim_matches('\'');
            let place = format!("{}:{}: runbook_url {url}", file.display(), n + 1);
            match runbook_target(url) {
                Err(problem) => problems.push(format!("{place}: {problem}")),
                Ok((_, None)) => {
                    problems.push(format!("{place}: no #anchor of the alert's section"))
                }
                Ok((path, Some(anchor))) => {
                    // Relative to the repository's root, as the runbook URLs are written.
                    if let Some(problem) =
                        checker.problem(Path::new(""), &format!("/{path}"), Some(&anchor))
                    {
                        problems.push(format!("{place}: {problem}"));
                    }
                }
            }
        }
        if file.starts_with("config") {
            let alerts = text
                .lines()
                .filter(|line| line.trim_start().starts_with("- alert:"))
                .count();
            assert!(alerts > 0, "{}: no alert found", file.display());
            assert_eq!(
                urls,
                alerts,
                "{}: alerts without runbook_url",
                file.display()
            );
        }
    }
    assert!(
        problems.is_empty(),
        "broken runbook URLs:\n{}",
        problems.join("\n")
    );
}

#[test]
fn slugs_follow_github() {
    assert_eq!(slug("Securing /metrics"), "securing-metrics");
    assert_eq!(
        slug("Sharding: many replicas, one tenant"),
        "sharding-many-replicas-one-tenant"
    );
    assert_eq!(
        slug("Quick start (no credentials needed)"),
        "quick-start-no-credentials-needed"
    );
    assert_eq!(
        slug("`run_labels` and snake_case"),
        "run_labels-and-snake_case"
    );
    assert_eq!(
        slug("Pauses: the demo stopped and continued"),
        "pauses-the-demo-stopped-and-continued"
    );
    assert_eq!(slug("See [the docs](docs/x.md) now"), "see-the-docs-now");
    assert_eq!(slug("Délai d'attente"), "délai-dattente");
}

#[test]
fn repeated_headings_get_numbered_anchors_and_code_blocks_hold_none() {
    let text = "# Title\n## Alerts\n```toml\n# not a heading\n```\n## Alerts\n### Alerts ###\n";
    let found = anchors(text);
    let expected: HashSet<String> = ["title", "alerts", "alerts-1", "alerts-2"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn links_in_code_are_not_links() {
    let text = "See [a](a.md#x) and `[b](b.md)`, and ``[c](c.md)``, and `split\nover lines [d](d.md)`.\n\
                \n```md\n[e](e.md)\n```\n[![f](f.png)](g.md \"title\") \\[h](h.md)\n";
    let found: Vec<(usize, String)> = links(text);
    let expected: Vec<(usize, String)> = vec![
        (1, "a.md#x".to_string()),
        (7, "g.md".to_string()),
        (7, "f.png".to_string()),
    ];
    assert_eq!(found, expected);
}

#[test]
fn runbook_urls_absolute_or_relative() {
    assert_eq!(
        runbook_target("https://github.com/o/r/blob/main/docs/operations.md#codeartsexporterdown"),
        Ok((
            "docs/operations.md".to_string(),
            Some("codeartsexporterdown".to_string())
        ))
    );
    assert_eq!(
        runbook_target("docs/operations.md#x"),
        Ok(("docs/operations.md".to_string(), Some("x".to_string())))
    );
    assert!(runbook_target("https://wiki.example.com/runbooks#x").is_err());
}
