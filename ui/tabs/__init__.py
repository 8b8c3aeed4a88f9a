"""One module per tab; each builds its components and wires their events in one create_*_tab function."""
