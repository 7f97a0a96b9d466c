"""The browser demo: bicubic vs SRResNet vs SRGAN side by side (`demo.ui.build_demo_tab`)."""
