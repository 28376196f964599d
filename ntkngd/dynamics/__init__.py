"""Function-space operators and dynamics: one operator family, one `predict`, one `Trajectory`.

    operator(method, kernels, damping, loss)            operators.py
        |-> Operator      linear flow, MSE: constant G, G'             linear.py
        `-> LossOperator  loss flow, any loss: G(f) x, x = H(f)^+ r    loss_flow.py
              (both `FlowOperator`s with one jit `Core`: base.py)
    predict(op, f0, y, f0_test, steps= | times=[..., inf]) -> Trajectory   trajectory.py
        closed forms and the t -> infinity fixed point (closed_form.py), diffrax flow and
        discrete map (flows.py)
    isotropy(op) -> IsotropyReport                                       diagnostics.py

`ntkngd` exports the public names; the modules are imported by name.
"""
