"""PriceTune's Gradio UI: one module per tab (ui/tabs/), the data box, the live view, access and shared helpers.
It imports trainer/, never the reverse; layout.build_app() puts it together."""
