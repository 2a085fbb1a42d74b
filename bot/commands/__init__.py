"""One module per ``/qlp`` command; ``registry`` maps names to them."""
