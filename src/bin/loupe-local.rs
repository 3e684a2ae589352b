//! loupe-local: runs a function and its extensions like the Lambda service does, on this machine.

fn main() {
    eprintln!("loupe-local: not built yet");
    std::process::exit(2);
}
