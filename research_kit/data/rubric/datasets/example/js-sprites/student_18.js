var ghost = createSprite(0, 200);
ghost.velocityX = 2;
var color = "black";

function draw() {
  if (keyDown("space")) {
    color = "darkred";
  }
  if (mouseDown("leftButton")) {
    color = "black";
  }
  background(color);
  drawSprites();
}
