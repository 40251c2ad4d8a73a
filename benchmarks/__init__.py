"""Side-by-side benchmarks: loanstate against peers and physical floors, as ratios in one run."""
