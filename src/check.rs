//! `loupe check`: reads log lines and tells, line by line, what loupe finds in them.
