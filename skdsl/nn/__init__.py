"""IR -> torch: the building-block modules (layers), the compiler that turns a lowered graph
into a plain nn.Module tree whose counts equal the analysis (compiler), the zoo's
create_model (models), export and weight conversion (export, weights), checkpoint I/O
(state_io) and the environment self-check (doctor). Everything torch lives at or above here.
"""
