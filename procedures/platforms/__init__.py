"""Where versions run: a small Platform protocol, a local implementation made of real
processes, and (later) Azure Container Instances behind Front Door."""
