print("nodenetd")
