"""Training: one Trainer for every model, the experiment folder around it, and the tasks that say
what is specific to the VQ-VAE and to the code priors."""
