function draw() {
  background("pink");
  if (mouseDown("leftButton")) {
    background("purple");
  }
  textSize(30);
  text("My game", 120, 200);
}
