"""Knowledge distillation: a student trained on the output distribution of its teacher."""
